/* Checks of our post-processor patches that a fuzzer would not state:
   a quoted filename's escapes (0010) and a boundary search that does not
   start again at every near miss (0008). Linked with -Wl,--wrap=memmem so
   that the library's memmem calls are counted. Exits 1 on a failure. */
#include "common.h"

static unsigned long memmem_calls;
void *__real_memmem (const void *, size_t, const void *, size_t);

void *
__wrap_memmem (const void *haystack, size_t hlen, const void *needle, size_t nlen)
{
  memmem_calls++;
  return __real_memmem (haystack, hlen, needle, nlen);
}

static int failures;

static void
check (int ok, const char *what, const char *detail)
{
  printf ("%s %s%s%s\n", ok ? "PASS" : "FAIL", what, ok ? "" : ": ", ok ? "" : detail);
  if (! ok)
    failures++;
}

/* Parses `body` under boundary "xyz" in pieces of `piece` bytes. */
static int
parse (const char *body, size_t len, size_t piece, struct parts *parts)
{
  struct fake_request r;
  struct MHD_PostProcessor *pp;
  int ok = 1;

  fake_request_init (&r, "multipart/form-data; boundary=xyz");
  pp = MHD_create_post_processor (&r.connection, 1024, &collect_part, parts);
  if (NULL == pp)
    return 0;
  for (size_t off = 0; off < len && ok; off += piece)
    ok = (MHD_YES == MHD_post_process (pp, body + off, MHD_MIN (piece, len - off)));
  return (MHD_YES == MHD_destroy_post_processor (pp)) && ok;
}

static void
escaped_names (void)
{
  static const struct
  {
    const char *disposition;
    const char *name;
    const char *filename;
  } cases[] = {
    { "name=\"file\"; filename=\"a\\\"b.txt\"", "file", "a\"b.txt" },
    { "name=\"file\"; filename=\"c\\\\d.txt\"", "file", "c\\d.txt" },
    { "name=\"file\"; filename=\"e\\\\\"", "file", "e\\" },
    { "name=\"file\"; filename=\"\\\"\\\"\"", "file", "\"\"" },
    { "name=\"file\"; filename=\"C:\\dir\\f.txt\"", "file", "C:\\dir\\f.txt" },
    { "name=\"x\\\"y\"; filename=\"g.txt\"", "x\"y", "g.txt" },
    { "name=\"file\"; filename=\"h\\\"; name=\\\"i.txt\"", "file", "h\"; name=\"i.txt" },
  };

  for (size_t i = 0; i < sizeof (cases) / sizeof (cases[0]); i++)
  {
    char body[512];
    char what[256];
    char detail[512];
    struct parts parts = { 0 };
    int len = snprintf (body, sizeof (body),
                        "--xyz\r\nContent-Disposition: form-data; %s\r\n\r\n"
                        "data\r\n--xyz--\r\n", cases[i].disposition);
    int ok = parse (body, (size_t) len, (size_t) len, &parts);

    snprintf (what, sizeof (what), "Content-Disposition: form-data; %s gives name %s, filename %s",
              cases[i].disposition, cases[i].name, cases[i].filename);
    snprintf (detail, sizeof (detail), "parsed %s, %zu parts, name %s, filename %s",
              ok ? "whole" : "with an error", parts.count,
              parts.count ? (parts.items[0].name ? parts.items[0].name : "(none)") : "-",
              parts.count ? (parts.items[0].filename ? parts.items[0].filename : "(none)") : "-");
    check (ok && (1 == parts.count) &&
           same_string (parts.items[0].name, cases[i].name) &&
           same_string (parts.items[0].filename, cases[i].filename) &&
           (4 == parts.items[0].size) && (0 == memcmp (parts.items[0].data, "data", 4)),
           what, detail);
    parts_free (&parts);
  }
}

static void
near_misses (void)
{
  /* 256 KiB of "--xyz" never after a CRLF, in 4 KiB pieces: a search that
     starts again after each near miss calls memmem once per 5 bytes. */
  const size_t size = 256 * 1024;
  const size_t piece = 4096;
  const char *head = "--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"n.bin\"\r\n\r\n";
  const char *tail = "\r\n--xyz--\r\n";
  size_t len = strlen (head) + size + strlen (tail);
  char *body = malloc (len);
  struct parts parts = { 0 };
  char detail[256];
  unsigned long limit = 4 * (len / piece + 1) + 16;
  int ok;

  memcpy (body, head, strlen (head));
  for (size_t i = 0; i < size; i++)
    body[strlen (head) + i] = "--xyz"[i % 5];
  memcpy (body + strlen (head) + size, tail, strlen (tail));
  memmem_calls = 0;
  ok = parse (body, len, piece, &parts);
  snprintf (detail, sizeof (detail), "%lu calls (at most %lu), parsed %s, %zu parts of %zu bytes",
            memmem_calls, limit, ok ? "whole" : "with an error", parts.count,
            parts.count ? parts.items[0].size : 0);
  check (ok && (1 == parts.count) && (size == parts.items[0].size) &&
         (0 == memcmp (parts.items[0].data, body + strlen (head), size)) &&
         (memmem_calls <= limit),
         "256 KiB of \"--xyz\" without CRLF: a few boundary searches per piece, not one per near miss",
         detail);
  parts_free (&parts);
  free (body);
}

int
main (void)
{
  escaped_names ();
  near_misses ();
  printf ("postprocessor_check: %d failed\n", failures);
  return failures ? 1 : 0;
}
