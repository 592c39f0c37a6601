#include "COffloadShim.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

/* Whether this CPU has AVX2, read once when the library loads. */
static int has_avx2 = 0;
__attribute__((constructor)) static void detect_avx2(void) { has_avx2 = __builtin_cpu_supports("avx2"); }

/* 32-bit words zero-extended into 64-bit lanes: no carry can be lost within 2^32 words. */
__attribute__((target("avx2")))
static uint64_t sum_avx2(const uint8_t *p, size_t n, size_t *done) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i a = zero, b = zero, c = zero, d = zero;
    size_t start = n;
    while (n >= 64) {
        __m256i x = _mm256_loadu_si256((const __m256i *)p);
        __m256i y = _mm256_loadu_si256((const __m256i *)(p + 32));
        a = _mm256_add_epi64(a, _mm256_unpacklo_epi32(x, zero));
        b = _mm256_add_epi64(b, _mm256_unpackhi_epi32(x, zero));
        c = _mm256_add_epi64(c, _mm256_unpacklo_epi32(y, zero));
        d = _mm256_add_epi64(d, _mm256_unpackhi_epi32(y, zero));
        p += 64;
        n -= 64;
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, s);
    *done = start - n;
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

uint64_t offload_checksum_wide_sum(const void *bytes, size_t count, size_t *consumed) {
#if defined(__x86_64__)
    if (has_avx2) return sum_avx2((const uint8_t *)bytes, count, consumed);
#endif
    *consumed = 0;
    return 0;
}
