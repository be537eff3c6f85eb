// Typed wrappers for libcurl's variadic functions and the macros Swift cannot
// see. One wrapper per argument type; nothing else belongs here.
#ifndef WEIGHTCACHE_CCURL_SHIM_H
#define WEIGHTCACHE_CCURL_SHIM_H
#include <curl/curl.h>

typedef size_t (*wc_curl_data_callback)(char *buffer, size_t size, size_t count, void *user);
typedef int (*wc_curl_xferinfo_callback)(void *user, curl_off_t dltotal, curl_off_t dlnow,
                                         curl_off_t ultotal, curl_off_t ulnow);

static inline CURLcode wc_curl_global_init(void) { return curl_global_init(CURL_GLOBAL_ALL); }

static inline CURLcode wc_easy_setopt_long(CURL *h, CURLoption o, long v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_string(CURL *h, CURLoption o, const char *v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_pointer(CURL *h, CURLoption o, void *v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_data_callback(CURL *h, CURLoption o, wc_curl_data_callback v) {
    return curl_easy_setopt(h, o, v);
}
static inline CURLcode wc_easy_setopt_xferinfo_callback(CURL *h, wc_curl_xferinfo_callback v) {
    return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, v);
}
static inline CURLcode wc_easy_getinfo_long(CURL *h, CURLINFO i, long *v) {
    return curl_easy_getinfo(h, i, v);
}
static inline CURLcode wc_easy_getinfo_pointer(CURL *h, CURLINFO i, void **v) {
    return curl_easy_getinfo(h, i, v);
}
static inline CURLMcode wc_multi_setopt_long(CURLM *m, CURLMoption o, long v) {
    return curl_multi_setopt(m, o, v);
}
static inline CURLcode wc_multi_message_result(const CURLMsg *m) { return m->data.result; }
static inline int wc_multi_message_is_done(const CURLMsg *m) { return m->msg == CURLMSG_DONE; }
static inline const curl_version_info_data *wc_curl_version_info(void) {
    return curl_version_info(CURLVERSION_NOW);
}
#endif
