// libxxhash. The shared library exports XXH3_*_dispatch (a runtime AVX2/SSE2
// choice), 2-3x faster than the plain XXH3 entry points on this hardware.
#ifndef WEIGHTCACHE_CXXHASH_SHIM_H
#define WEIGHTCACHE_CXXHASH_SHIM_H
#include <xxhash.h>
#include <xxh_x86dispatch.h>
#endif
