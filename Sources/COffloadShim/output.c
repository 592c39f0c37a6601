#include "COffloadShim.h"
#include <stdio.h>

void offload_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }
