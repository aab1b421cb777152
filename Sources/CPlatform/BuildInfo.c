#include "CPlatform.h"

#if __has_include("version.generated.h")
#include "version.generated.h"
#endif
#ifndef UPLOAD_SERVER_VERSION
#define UPLOAD_SERVER_VERSION "0.0.0-dev"
#endif
#ifndef UPLOAD_SERVER_REVISION
#define UPLOAD_SERVER_REVISION "unknown"
#endif

const char *upload_server_version(void) { return UPLOAD_SERVER_VERSION; }
const char *upload_server_revision(void) { return UPLOAD_SERVER_REVISION; }
