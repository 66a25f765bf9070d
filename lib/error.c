/* Error texts and the library version.
 * uses: nothing of libals (the bottom layer, with alloc.c) */
#include "internal.h"

const char *als_strerror(int err)
{
    switch (err) {
    case ALS_OK:        return "success";
    case ALS_EINVAL:    return "invalid argument";
    case ALS_ENOMEM:    return "out of memory";
    case ALS_EFULL:     return "queue full";
    case ALS_ESHUTDOWN: return "pool shut down";
    case ALS_EDEADLK:   return "operation would deadlock";
    case ALS_ETIMEDOUT: return "timed out";
    case ALS_ECANCELED: return "cancelled";
    case ALS_ETASK:     return "a task failed";
    default:            return "unknown error";
    }
}

const char *als_version(void)
{
    return ALS_VERSION_STRING;
}
