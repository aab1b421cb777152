/* Shared by the harnesses: a connection stand-in that carries only the
   request's Content-Type, which is all MHD_create_post_processor reads
   (as upstream's test_postprocessor does), and the collected parts. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "platform.h"
#include "microhttpd.h"
#include "internal.h"

struct fake_request
{
  struct MHD_Connection connection;
  struct MHD_HTTP_Header header;
};

static inline void
fake_request_init (struct fake_request *r, const char *content_type)
{
  memset (r, 0, sizeof (*r));
  r->connection.headers_received = &r->header;
  r->connection.headers_received_tail = &r->header;
  r->header.header = MHD_HTTP_HEADER_CONTENT_TYPE;
  r->header.header_size = strlen (MHD_HTTP_HEADER_CONTENT_TYPE);
  r->header.value = (char *) content_type;
  r->header.value_size = strlen (content_type);
  r->header.kind = MHD_HEADER_KIND;
}

/* What the iterator saw, as the server reads it: a new part begins at
   offset 0 after data, or with another name or filename. */
struct part
{
  char *name;
  char *filename;
  char *data;
  size_t size;
};

struct parts
{
  struct part *items;
  size_t count;
  size_t capacity;
};

static inline int
same_string (const char *a, const char *b)
{
  if ((NULL == a) || (NULL == b))
    return a == b;
  return 0 == strcmp (a, b);
}

static inline char *
copy_string (const char *s)
{
  return (NULL == s) ? NULL : strdup (s);
}

static enum MHD_Result
collect_part (void *cls, enum MHD_ValueKind kind, const char *key,
              const char *filename, const char *content_type,
              const char *transfer_encoding, const char *data,
              uint64_t off, size_t size)
{
  struct parts *parts = cls;
  struct part *last = (0 == parts->count) ? NULL
                      : &parts->items[parts->count - 1];

  (void) kind; (void) content_type; (void) transfer_encoding;
  if ( (NULL == last) ||
       ( (0 == off) &&
         ( (0 != last->size) ||
           (! same_string (last->name, key)) ||
           (! same_string (last->filename, filename)) ) ) )
  {
    if (parts->count == parts->capacity)
    {
      parts->capacity = parts->capacity * 2 + 4;
      parts->items = realloc (parts->items,
                              parts->capacity * sizeof (struct part));
      if (NULL == parts->items)
        abort ();
    }
    last = &parts->items[parts->count++];
    last->name = copy_string (key);
    last->filename = copy_string (filename);
    last->data = NULL;
    last->size = 0;
  }
  if (off != last->size)
  {
    fprintf (stderr, "offset %llu after %zu bytes of the part\n",
             (unsigned long long) off, last->size);
    abort ();
  }
  if (0 != size)
  {
    last->data = realloc (last->data, last->size + size);
    if (NULL == last->data)
      abort ();
    memcpy (last->data + last->size, data, size);   /* ASan checks the read */
    last->size += size;
  }
  return MHD_YES;
}

static inline void
parts_free (struct parts *parts)
{
  for (size_t i = 0; i < parts->count; i++)
  {
    free (parts->items[i].name);
    free (parts->items[i].filename);
    free (parts->items[i].data);
  }
  free (parts->items);
  memset (parts, 0, sizeof (*parts));
}

#endif
