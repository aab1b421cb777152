/* libFuzzer harness for the patched post-processor (patches 0001, 0007,
   0008, 0010).

   Input: four control bytes, then the rest.
     [0] bit 0: 0 = the rest describes parts, from which the harness builds a
                valid multipart body and knows what must come out;
                1 = the rest is the body itself (anything goes, only the
                sanitizers judge);
         bit 1: (raw) application/x-www-form-urlencoded instead of multipart
     [1] the post-processor's buffer: 256 + 64 * n bytes, 255: 128 KiB
     [2] how the body is cut: 0 whole; 1 pieces sized by the next bytes;
         2 one byte at a time around every "--" + boundary, else 4 KiB;
         3 one byte at a time
     [3] the boundary's length, 2 to 41
   Each piece is passed in its own allocation of exactly its size, freed
   right after the call: a read of it later, or past it, is an ASan report.
   A valid body must come back as the parts it was built from, whatever the
   cuts and the buffer. */
#include "common.h"

static const char boundary_chars[] =
  "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?";
static const char name_chars[] = "abcdefghijklmnopqrstuvwxyz0123456789_-. ";
static const char filename_chars[] = "abcdefghijklmnopqrstuvwxyz.-_ \"\\\\";

struct reader
{
  const uint8_t *data;
  size_t size;
};

static uint8_t
next (struct reader *r)
{
  uint8_t b;

  if (0 == r->size)
    return 0;
  b = r->data[0];
  r->data++;
  r->size--;
  return b;
}

struct text
{
  char *bytes;
  size_t len;
  size_t capacity;
};

static void
put (struct text *t, const void *bytes, size_t len)
{
  if (t->len + len + 1 > t->capacity)
  {
    t->capacity = (t->len + len + 1) * 2;
    t->bytes = realloc (t->bytes, t->capacity);
    if (NULL == t->bytes)
      abort ();
  }
  memcpy (t->bytes + t->len, bytes, len);
  t->len += len;
  t->bytes[t->len] = '\0';
}

static void
puts_ (struct text *t, const char *s)
{
  put (t, s, strlen (s));
}

/* Feeds `body` to a new post-processor, cut as `plan` says; false if the
   post-processor refused something or did not end cleanly. */
static int
run (const char *content_type, size_t buffer_size, const char *body,
     size_t len, int plan, struct reader *sizes, const char *delimiter,
     struct parts *parts)
{
  struct fake_request r;
  struct MHD_PostProcessor *pp;
  int ok = 1;
  size_t off = 0;

  if ( (3 == plan) && (len > 16 * 1024) )
    plan = 2;                 /* bounded time per input */
  fake_request_init (&r, content_type);
  pp = MHD_create_post_processor (&r.connection, buffer_size, &collect_part,
                                  parts);
  if (NULL == pp)
    return 0;
  while (off < len)
  {
    size_t piece;
    char *copy;

    switch (plan)
    {
    case 0:
      piece = len - off;
      break;
    case 1:
      piece = 1 + (next (sizes) % 64) * ((next (sizes) & 1) ? 61 : 1);
      break;
    case 2:
      {
        /* one byte while a delimiter starts within a few bytes around */
        size_t dlen = strlen (delimiter);
        size_t from = (off > dlen + 4) ? off - dlen - 4 : 0;
        size_t span = MHD_MIN (len - from, 2 * dlen + 8);
        const char *hit = memmem (body + from, span, delimiter, dlen);

        piece = (NULL != hit) ? 1 : 4096;
        break;
      }
    default:
      piece = 1;
      break;
    }
    piece = MHD_MIN (piece, len - off);
    copy = malloc (piece);
    if (NULL == copy)
      abort ();
    memcpy (copy, body + off, piece);
    if (MHD_YES != MHD_post_process (pp, copy, piece))
      ok = 0;
    free (copy);
    off += piece;
    if (! ok)
      break;
  }
  if (MHD_YES != MHD_destroy_post_processor (pp))
    ok = 0;
  return ok;
}

static void
fail (const char *what, size_t index, const struct part *got,
      const struct part *want)
{
  fprintf (stderr, "part %zu: %s differs: got name %s filename %s (%zu bytes), "
           "want name %s filename %s (%zu bytes)\n", index, what,
           got->name ? got->name : "(none)", got->filename ? got->filename : "(none)",
           got->size, want->name ? want->name : "(none)",
           want->filename ? want->filename : "(none)", want->size);
  abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct reader in = { data, size };
  uint8_t mode = next (&in);
  uint8_t buffer_byte = next (&in);
  size_t buffer_size = (255 == buffer_byte) ? 128 * 1024 : 256 + 64 * (size_t) buffer_byte;
  int plan = next (&in) % 4;
  size_t blen = 2 + next (&in) % 40;
  char boundary[64];
  char delimiter[80];
  char content_type[128];
  struct text body = { 0 };
  struct parts want = { 0 };
  struct parts got = { 0 };
  int ok;

  for (size_t i = 0; i < blen; i++)
    boundary[i] = boundary_chars[(i * 7 + size) % (sizeof (boundary_chars) - 1)];
  boundary[blen] = '\0';
  snprintf (delimiter, sizeof (delimiter), "\r\n--%s", boundary);
  if ( (mode & 3) == 3)
    snprintf (content_type, sizeof (content_type), "%s",
              MHD_HTTP_POST_ENCODING_FORM_URLENCODED);
  else /* quoted: the boundary may hold characters a token may not */
    snprintf (content_type, sizeof (content_type),
              "multipart/form-data; boundary=\"%s\"", boundary);

  if (mode & 1)
  {
    /* the body as given; the pieces' sizes come from the body itself */
    struct reader sizes = in;

    put (&body, in.data, in.size);
    (void) run (content_type, buffer_size, body.bytes, body.len, plan, &sizes,
                delimiter + 2, &got);
    parts_free (&got);
    free (body.bytes);
    return 0;
  }

  /* parts: name, filename (or none), data; then the closing delimiter */
  while ( (in.size > 0) && (want.count < 8) )
  {
    struct part part = { 0 };
    struct text name = { 0 };
    struct text filename = { 0 };
    struct text escaped = { 0 };
    size_t nlen = next (&in) % 12;
    size_t flen = next (&in) % 16;
    size_t dlen = next (&in);

    dlen = (dlen < 200) ? dlen : (dlen - 200) * 512;
    put (&name, "", 0);
    for (size_t i = 0; i < nlen; i++)
      put (&name, &name_chars[next (&in) % (sizeof (name_chars) - 1)], 1);
    if (0 != flen)
    {
      put (&filename, "", 0);
      put (&escaped, "", 0);
      for (size_t i = 1; i < flen; i++)
      {
        char c = filename_chars[next (&in) % (sizeof (filename_chars) - 1)];

        put (&filename, &c, 1);
        if ( ('"' == c) || ('\\' == c) )
          put (&escaped, "\\", 1);
        put (&escaped, &c, 1);
      }
    }
    puts_ (&body, "--");
    puts_ (&body, boundary);
    puts_ (&body, "\r\nContent-Disposition: form-data; name=\"");
    puts_ (&body, name.bytes);
    puts_ (&body, "\"");
    if (0 != flen)
    {
      puts_ (&body, "; filename=\"");
      puts_ (&body, escaped.bytes);
      puts_ (&body, "\"\r\nContent-Type: application/octet-stream");
    }
    puts_ (&body, "\r\n\r\n");
    part.name = name.bytes;
    part.filename = (0 != flen) ? filename.bytes : NULL;
    part.data = malloc (dlen + 1);
    part.size = dlen;
    for (size_t i = 0; i < dlen; i++)
    {
      /* mostly what the input says; past its end, near misses */
      part.data[i] = (in.size > 0) ? (char) next (&in)
                     : delimiter[i % (strlen (delimiter) - 1)];
    }
    /* a delimiter inside the data would end it: break each */
    for (char *hit; NULL != (hit = memmem (part.data, part.size, delimiter,
                                           strlen (delimiter))); )
      hit[strlen (delimiter) - 1] ^= 0x20;
    put (&body, part.data, part.size);
    puts_ (&body, "\r\n");
    free (escaped.bytes);
    /* as read back: an empty part followed by one of the same name and
       filename reads as one part (collect_part) */
    if ( (want.count > 0) &&
         (0 == want.items[want.count - 1].size) &&
         same_string (want.items[want.count - 1].name, part.name) &&
         same_string (want.items[want.count - 1].filename, part.filename) )
    {
      struct part *last = &want.items[want.count - 1];

      free (last->data);
      free (part.name);
      free (part.filename);
      last->data = part.data;
      last->size = part.size;
    }
    else
    {
      if (want.count == want.capacity)
      {
        want.capacity = want.capacity * 2 + 4;
        want.items = realloc (want.items, want.capacity * sizeof (struct part));
      }
      want.items[want.count++] = part;
    }
  }
  if (0 == want.count)
  {
    free (body.bytes);
    return 0;
  }
  /* the CRLF before the closing delimiter was put after the last data */
  body.len -= 2;
  puts_ (&body, "\r\n--");
  puts_ (&body, boundary);
  puts_ (&body, "--\r\n");

  {
    struct reader sizes = { data, size };

    ok = run (content_type, buffer_size, body.bytes, body.len, plan, &sizes,
              delimiter + 2, &got);
  }
  if (! ok)
  {
    fprintf (stderr, "a valid body of %zu parts was refused\n", want.count);
    abort ();
  }
  if (got.count != want.count)
  {
    fprintf (stderr, "%zu parts instead of %zu\n", got.count, want.count);
    abort ();
  }
  for (size_t i = 0; i < want.count; i++)
  {
    if (! same_string (got.items[i].name, want.items[i].name))
      fail ("name", i, &got.items[i], &want.items[i]);
    if (! same_string (got.items[i].filename, want.items[i].filename))
      fail ("filename", i, &got.items[i], &want.items[i]);
    if ( (got.items[i].size != want.items[i].size) ||
         ( (0 != want.items[i].size) &&
           (0 != memcmp (got.items[i].data, want.items[i].data,
                         want.items[i].size)) ) )
      fail ("data", i, &got.items[i], &want.items[i]);
  }
  parts_free (&want);
  parts_free (&got);
  free (body.bytes);
  return 0;
}
