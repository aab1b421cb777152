#ifndef UPLOAD_SERVER_CPLATFORM_H
#define UPLOAD_SERVER_CPLATFORM_H

// What the Platform module needs from C that Swift's Glibc module does not give.

#include <malloc.h>  // mallopt
#include <sys/types.h>
#include <sys/vfs.h>  // fstatfs: which filesystem holds the upload directory

// glibc declares fallocate(2) only under _GNU_SOURCE, which Swift's Glibc module
// is not built with.
int fallocate(int fd, int mode, off_t offset, off_t len);

// renameat2(2), also declared only under _GNU_SOURCE (glibc 2.28 and later).
int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);

// O_TMPFILE, AT_EMPTY_PATH, RENAME_NOREPLACE and FALLOC_FL_KEEP_SIZE (Constants.c).
extern const int cplatform_o_tmpfile;
extern const int cplatform_at_empty_path;
extern const unsigned int cplatform_rename_noreplace;
extern const int cplatform_falloc_keep_size;

// The version and revision this binary was built from. scripts/swift writes
// them into version.generated.h (from scripts/version: the git tag, or
// 0.0.0-dev+<sha>); a build without it says "0.0.0-dev" and "unknown". C
// functions rather than a Swift constant: a new version recompiles one C file,
// not every Swift module.
const char *upload_server_version(void);
const char *upload_server_revision(void);

#endif
