/* libFuzzer harness for request parsing in the patched library: the request
   line, headers, Content-Length and chunked bodies, the library's own error
   answers (patches 0004-0006), early answers and their lingering close
   (0009), and the post-processor behind a real connection.

   One daemon for the process, in external epoll mode (the server's event
   code, run by MHD_run here), without a listening socket: each input is a
   new connection over a socketpair, added with MHD_add_connection. The
   application answers like the server does: "/early..." at once with 413
   (before the body), a form body through a post-processor, anything else by
   reading the body; then 200.

   Input: one control byte, then the bytes the client sends.
     bit 0: the client ends its side after sending (else it only closes
            after reading what comes back)
     bits 1-2: pieces of 1, 7, 512 bytes or all at once, with the daemon run
            between them */
#include "platform.h"
#include "microhttpd.h"
#include <sys/socket.h>
#include <netinet/in.h>
#include <fcntl.h>

static struct MHD_Daemon *daemon_;

struct request
{
  struct MHD_PostProcessor *pp;
  size_t body;
};

static enum MHD_Result
form_part (void *cls, enum MHD_ValueKind kind, const char *key,
           const char *filename, const char *content_type,
           const char *transfer_encoding, const char *data,
           uint64_t off, size_t size)
{
  volatile char sink = 0;

  (void) cls; (void) kind; (void) off;
  /* read everything the library hands over: ASan checks it */
  for (const char *s = key; NULL != s && *s; s++) sink ^= *s;
  for (const char *s = filename; NULL != s && *s; s++) sink ^= *s;
  for (const char *s = content_type; NULL != s && *s; s++) sink ^= *s;
  for (const char *s = transfer_encoding; NULL != s && *s; s++) sink ^= *s;
  for (size_t i = 0; i < size; i++) sink ^= data[i];
  return MHD_YES;
}

static enum MHD_Result
answer (struct MHD_Connection *connection, unsigned int status)
{
  static const char body[] = "{\"ok\":true}\n";
  struct MHD_Response *response =
    MHD_create_response_from_buffer (sizeof (body) - 1, (void *) body,
                                     MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret;

  if (NULL == response)
    return MHD_NO;
  (void) MHD_add_response_header (response, "Content-Type", "application/json");
  ret = MHD_queue_response (connection, status, response);
  MHD_destroy_response (response);
  return ret;
}

static enum MHD_Result
access_handler (void *cls, struct MHD_Connection *connection, const char *url,
                const char *method, const char *version,
                const char *upload_data, size_t *upload_data_size,
                void **req_cls)
{
  struct request *request = *req_cls;

  (void) cls; (void) method; (void) version;
  if (NULL == request)
  {
    /* first call: the head is in, the body is not */
    if (0 == strncmp (url, "/early", 6))
      return answer (connection, 413);
    request = calloc (1, sizeof (*request));
    if (NULL == request)
      return MHD_NO;
    *req_cls = request;
    request->pp = MHD_create_post_processor (connection, 1024, &form_part, NULL);
    return MHD_YES;
  }
  if (0 != *upload_data_size)
  {
    volatile char sink = 0;

    for (size_t i = 0; i < *upload_data_size; i++)
      sink ^= upload_data[i];
    request->body += *upload_data_size;
    if ( (NULL != request->pp) &&
         (MHD_YES != MHD_post_process (request->pp, upload_data,
                                       *upload_data_size)) )
      return MHD_NO;          /* no answer can be queued mid-body: abort */
    *upload_data_size = 0;
    return MHD_YES;
  }
  return answer (connection, 200);
}

static void
completed (void *cls, struct MHD_Connection *connection, void **req_cls,
           enum MHD_RequestTerminationCode toe)
{
  struct request *request = *req_cls;

  (void) cls; (void) connection; (void) toe;
  if (NULL == request)
    return;
  if (NULL != request->pp)
    (void) MHD_destroy_post_processor (request->pp);
  free (request);
  *req_cls = NULL;
}

#ifdef MHD_UPLOAD_SERVER_PATCHES
static void
error_response (void *cls, struct MHD_Connection *connection, void **req_cls,
                unsigned int status_code, const char *method, const char *url)
{
  volatile char sink = 0;

  (void) cls; (void) connection; (void) req_cls; (void) status_code;
  for (const char *s = method; NULL != s && *s; s++) sink ^= *s;
  for (const char *s = url; NULL != s && *s; s++) sink ^= *s;
}
#endif

static void
quiet (void *cls, const char *fmt, va_list ap)
{
  (void) cls; (void) fmt; (void) ap;
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  (void) argc; (void) argv;
  daemon_ = MHD_start_daemon (MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET
                              | MHD_USE_ERROR_LOG,
                              0, NULL, NULL, &access_handler, NULL,
                              MHD_OPTION_EXTERNAL_LOGGER, &quiet, NULL,
                              MHD_OPTION_NOTIFY_COMPLETED, &completed, NULL,
#ifdef MHD_UPLOAD_SERVER_PATCHES   /* also builds against a stock library */
                              MHD_OPTION_ERROR_RESPONSE_CALLBACK,
                              &error_response, NULL,
#endif
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t) 16 * 1024,
                              MHD_OPTION_END);
  if (NULL == daemon_)
  {
    fprintf (stderr, "MHD_start_daemon failed\n");
    abort ();
  }
  return 0;
}

static unsigned int
connections (void)
{
  const union MHD_DaemonInfo *info =
    MHD_get_daemon_info (daemon_, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);

  return (NULL == info) ? 0 : info->num_connections;
}

/* Runs the daemon once and reads what it sent; false once it closed. */
static int
step (int client)
{
  char buffer[4096];
  ssize_t got;

  (void) MHD_run (daemon_);
  while (0 < (got = recv (client, buffer, sizeof (buffer), MSG_DONTWAIT)))
    ;
  return ! ( (0 == got) ||
             ( (0 > got) && (EAGAIN != errno) && (EWOULDBLOCK != errno) ) );
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const size_t pieces[] = { 1, 7, 512, SIZE_MAX };
  struct sockaddr_in peer;
  int sv[2];
  uint8_t control;
  size_t piece;
  int open_ = 1;

  if (0 == size)
    return 0;
  control = data[0];
  data++;
  size--;
  piece = pieces[(control >> 1) & 3];
  if (0 != socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
    abort ();
  memset (&peer, 0, sizeof (peer));
  peer.sin_family = AF_INET;
  peer.sin_port = htons (40000);
  peer.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  if (MHD_YES != MHD_add_connection (daemon_, sv[0],
                                     (const struct sockaddr *) &peer,
                                     sizeof (peer)))
  {
    close (sv[1]);
    return 0;
  }
  for (size_t off = 0; (off < size) && open_; )
  {
    size_t n = (piece < size - off) ? piece : size - off;
    ssize_t sent = send (sv[1], data + off, n, MSG_DONTWAIT | MSG_NOSIGNAL);

    if (0 < sent)
      off += (size_t) sent;
    else if ( (EAGAIN != errno) && (EWOULDBLOCK != errno) )
      break;              /* the daemon closed the connection */
    open_ = step (sv[1]);
  }
  if (control & 1)
    (void) shutdown (sv[1], SHUT_WR);
  for (int i = 0; (i < 64) && open_; i++)
    open_ = step (sv[1]);
  close (sv[1]);
  /* the daemon sees the close and lets the connection go */
  for (int i = 0; (i < 1000) && (0 != connections ()); i++)
    (void) MHD_run (daemon_);
  if (0 != connections ())
  {
    fprintf (stderr, "a connection was not released after its peer closed\n");
    abort ();
  }
  return 0;
}
