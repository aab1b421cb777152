// Linux flags that glibc defines only under _GNU_SOURCE, which Swift's Glibc
// module is not built with: taken here from the system's own headers.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>

#include "CPlatform.h"

const int cplatform_o_tmpfile = O_TMPFILE;
const int cplatform_at_empty_path = AT_EMPTY_PATH;
const unsigned int cplatform_rename_noreplace = RENAME_NOREPLACE;
const int cplatform_falloc_keep_size = FALLOC_FL_KEEP_SIZE;
