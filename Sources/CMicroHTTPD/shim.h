#ifndef UPLOAD_SERVER_MHD_SHIM_H
#define UPLOAD_SERVER_MHD_SHIM_H

// Swift cannot call C variadic functions; these wrappers give the few we need
// fixed signatures.

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>

// Our patched build (scripts/libmicrohttpd) tells the application about the
// answers it makes by itself; a stock library never calls this.
typedef void (*ErrorResponseCallback)(void *cls, struct MHD_Connection *connection,
                                      void **req_cls, unsigned int status_code,
                                      const char *method, const char *url);

// The patch series built in, or NULL for a stock library.
static inline const char *
shim_patches(void)
{
#ifdef MHD_UPLOAD_SERVER_PATCHES
  return MHD_UPLOAD_SERVER_PATCHES;
#else
  return NULL;
#endif
}

// Descriptors our build's lingering close may hold outside the connection
// limit: its sockets and one epoll descriptor (none for a stock library).
static inline int
shim_lingering_descriptors(void)
{
#ifdef MHD_UPLOAD_SERVER_LINGER_SOCKETS
  return MHD_UPLOAD_SERVER_LINGER_SOCKETS + 1;
#else
  return 0;
#endif
}

// Leaves the request target as sent: the application decodes the one segment
// that needs it (a PUT's file name), exactly once, and logs the path as sent.
static size_t
shim_keep_escaped(void *cls, struct MHD_Connection *connection, char *text)
{
  (void) cls;
  (void) connection;
  return strlen(text);
}

// MHD_start_daemon with its integer options as an MHD_OPTION_ARRAY; the
// callbacks (two pointers each) are passed on their own, the logger first so
// that it receives every message.
static inline struct MHD_Daemon *
shim_start_daemon(unsigned int flags,
                  MHD_AccessHandlerCallback handler, void *handler_cls,
                  MHD_RequestCompletedCallback completed, void *completed_cls,
                  MHD_LogCallback logger, void *logger_cls,
                  ErrorResponseCallback error_response, void *error_response_cls,
                  MHD_NotifyConnectionCallback notify, void *notify_cls,
                  const struct MHD_OptionItem *options)
{
#ifdef MHD_UPLOAD_SERVER_PATCHES
  return MHD_start_daemon(flags, 0, NULL, NULL, handler, handler_cls,
                          MHD_OPTION_EXTERNAL_LOGGER, logger, logger_cls,
                          MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                          MHD_OPTION_UNESCAPE_CALLBACK, shim_keep_escaped, NULL,
                          MHD_OPTION_NOTIFY_CONNECTION, notify, notify_cls,
                          MHD_OPTION_ERROR_RESPONSE_CALLBACK,
                          (MHD_ErrorResponseCallback) error_response, error_response_cls,
                          MHD_OPTION_ARRAY, options,
                          MHD_OPTION_END);
#else
  (void) error_response;
  (void) error_response_cls;
  return MHD_start_daemon(flags, 0, NULL, NULL, handler, handler_cls,
                          MHD_OPTION_EXTERNAL_LOGGER, logger, logger_cls,
                          MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                          MHD_OPTION_UNESCAPE_CALLBACK, shim_keep_escaped, NULL,
                          MHD_OPTION_NOTIFY_CONNECTION, notify, notify_cls,
                          MHD_OPTION_ARRAY, options,
                          MHD_OPTION_END);
#endif
}

static inline uint16_t
shim_daemon_port(struct MHD_Daemon *daemon)
{
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
  return info == NULL ? 0 : info->port;
}

static inline const struct sockaddr *
shim_client_address(struct MHD_Connection *connection)
{
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  return info == NULL ? NULL : info->client_addr;
}

// What the application stored for a connection when it opened (NOTIFY_CONNECTION).
static inline void *
shim_socket_context(struct MHD_Connection *connection)
{
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return info == NULL ? NULL : info->socket_context;
}

// A connection's own idle timeout, in seconds.
static inline void
shim_set_connection_timeout(struct MHD_Connection *connection, unsigned int seconds)
{
  MHD_set_connection_option(connection, MHD_CONNECTION_OPTION_TIMEOUT, seconds);
}

// Ends a connection without an answer: the library sees end-of-stream on its
// next read and closes it. The descriptor stays the library's to close.
static inline void
shim_shut_down(struct MHD_Connection *connection)
{
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info != NULL)
    shutdown(info->connect_fd, SHUT_RDWR);
}

#endif
