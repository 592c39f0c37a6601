#include "COffloadShim.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

/* The widest vectors this CPU has, read once when the library loads: 512, 256 or 0. */
static int vector_bits = 0;
__attribute__((constructor)) static void detect_vectors(void) {
    vector_bits = __builtin_cpu_supports("avx512f") ? 512 : __builtin_cpu_supports("avx2") ? 256 : 0;
}

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

/* Each 32-bit word split into its two 16-bit halves, summed in 32-bit lanes (a shift and an
 * and, cheaper than the shuffles that widen to 64 bits). hi * 2^16 + lo and hi + lo are
 * equal modulo 0xFFFF, so the folded result is the same. A lane takes one half per 128
 * bytes; it is emptied into the 64-bit total every 65535 rounds, before it could carry out. */
__attribute__((target("avx512f")))
static uint64_t sum_avx512(const uint8_t *p, size_t n, size_t *done) {
    const __m512i zero = _mm512_setzero_si512(), low = _mm512_set1_epi32(0xffff);
    size_t start = n;
    uint64_t total = 0;
    while (n >= 64) {
        __m512i a = zero, b = zero, c = zero, d = zero;
        for (size_t rounds = 0; n >= 128 && rounds < 65535; rounds++) {
            __m512i x = _mm512_loadu_si512((const void *)p);
            __m512i y = _mm512_loadu_si512((const void *)(p + 64));
            a = _mm512_add_epi32(a, _mm512_and_si512(x, low));
            b = _mm512_add_epi32(b, _mm512_srli_epi32(x, 16));
            c = _mm512_add_epi32(c, _mm512_and_si512(y, low));
            d = _mm512_add_epi32(d, _mm512_srli_epi32(y, 16));
            p += 128;
            n -= 128;
        }
        if (n >= 64 && n < 128) {
            __m512i x = _mm512_loadu_si512((const void *)p);
            a = _mm512_add_epi32(a, _mm512_and_si512(x, low));
            b = _mm512_add_epi32(b, _mm512_srli_epi32(x, 16));
            p += 64;
            n -= 64;
        }
        /* Widen each accumulator's sixteen lanes to 64 bits before adding them up. */
        __m512i lanes[4] = {a, b, c, d};
        for (int i = 0; i < 4; i++) {
            __m512i wide = _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(lanes[i])),
                                            _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(lanes[i], 1)));
            total += (uint64_t)_mm512_reduce_add_epi64(wide);
        }
    }
    *done = start - n;
    return total;
}
#endif

uint64_t offload_checksum_wide_sum_using(int bits, const void *bytes, size_t count, size_t *consumed) {
#if defined(__x86_64__)
    if (bits >= 512 && vector_bits >= 512) return sum_avx512((const uint8_t *)bytes, count, consumed);
    if (bits >= 256 && vector_bits >= 256) return sum_avx2((const uint8_t *)bytes, count, consumed);
#endif
    (void)bits;
    (void)bytes;
    (void)count;
    *consumed = 0;
    return 0;
}

uint64_t offload_checksum_wide_sum(const void *bytes, size_t count, size_t *consumed) {
#if defined(__x86_64__)
    if (vector_bits >= 512) return sum_avx512((const uint8_t *)bytes, count, consumed);
    if (vector_bits >= 256) return sum_avx2((const uint8_t *)bytes, count, consumed);
#endif
    *consumed = 0;
    return 0;
}
