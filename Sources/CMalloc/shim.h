// glibc's allocator tuning (mallopt), for Compute.retainFreedMemory().
#include <malloc.h>
