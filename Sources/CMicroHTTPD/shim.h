#ifndef UPLOAD_SERVER_MHD_SHIM_H
#define UPLOAD_SERVER_MHD_SHIM_H

// Swift cannot call C variadic functions; these wrappers give the few we need
// fixed signatures. Also the two glibc declarations Swift's Glibc module lacks.

#include <malloc.h>  // mallopt
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <microhttpd.h>

// glibc declares fallocate(2) only under _GNU_SOURCE, which Swift's Glibc module
// is not built with.
int fallocate(int fd, int mode, off_t offset, off_t len);

// MHD_start_daemon with its integer options as an MHD_OPTION_ARRAY; the
// callbacks (two pointers each) are passed on their own, the logger first so
// that it receives every message.
static inline struct MHD_Daemon *
shim_start_daemon(unsigned int flags,
                  MHD_AccessHandlerCallback handler, void *handler_cls,
                  MHD_RequestCompletedCallback completed, void *completed_cls,
                  MHD_LogCallback logger, void *logger_cls,
                  const struct MHD_OptionItem *options)
{
  return MHD_start_daemon(flags, 0, NULL, NULL, handler, handler_cls,
                          MHD_OPTION_EXTERNAL_LOGGER, logger, logger_cls,
                          MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                          MHD_OPTION_ARRAY, options,
                          MHD_OPTION_END);
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

#endif
