// liblz4's frame API (lz4frame.h), used for objects stored as lz4 frames.
#ifndef WEIGHTCACHE_CLZ4_SHIM_H
#define WEIGHTCACHE_CLZ4_SHIM_H
#include <lz4frame.h>
#endif
