/*
 * _mask.h — RFC 6455 §5.3 masking for bastion_fast._pump, fused with the copy.
 *
 * bf_mask_copy(dst, src, n, key, phase) writes dst[i] = src[i] ^ key[(phase + i) % 4] for i < n. dst may equal src
 * (in-place unmasking of a receive buffer); any other overlap is not supported. There is no separate "copy, then
 * mask" pass: every byte is read once and written once, which is what makes masking nearly free next to memcpy.
 *
 * Implementations, best first, picked once by bf_mask_init() (called when the module is imported):
 *   avx2    — 32-byte vectors, x86-64 with gcc/clang (not clang-cl/MSVC), chosen at run time by __builtin_cpu_supports("avx2"); the
 *             function carries __attribute__((target("avx2"))) so the rest of the module stays baseline x86-64.
 *   sse2    — 16-byte vectors, the x86-64 baseline (every x86-64 CPU has SSE2; MSVC x64 included).
 *   uint64  — 8-byte words, any other compiler/CPU (aarch64, ppc64le, s390x, ...); compilers vectorise it further.
 * Every path finishes with the same 8-byte and 1-byte tails, and since every vector width is a multiple of 4 the
 * key phase never changes inside a vector loop. bf_mask_impl() names the chosen path (logged, shown by benches).
 */
#ifndef BASTION_FAST_MASK_H
#define BASTION_FAST_MASK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#  define BF_MASK_SSE2 1
#  include <emmintrin.h>
#endif

#if defined(BF_MASK_SSE2) && (defined(__GNUC__) || defined(__clang__)) && !defined(_MSC_VER) && !defined(__INTEL_COMPILER)
#  define BF_MASK_AVX2 1
#  include <immintrin.h>
#endif

typedef void (*bf_mask_fn)(unsigned char *dst, const unsigned char *src, size_t n, uint32_t key32);

/* 8-byte words, then bytes; `key32` holds the 4 (already phase-rotated) key bytes in memory order. */
static void bf_mask_words(unsigned char *dst, const unsigned char *src, size_t n, uint32_t key32)
{
    uint64_t k64 = ((uint64_t)key32 << 32) | (uint64_t)key32;  /* both halves equal: endian-neutral */
    unsigned char k[4];
    size_t i = 0;
    memcpy(k, &key32, 4);
    for (; i + 32 <= n; i += 32) {
        uint64_t a, b, c, d;
        memcpy(&a, src + i, 8);
        memcpy(&b, src + i + 8, 8);
        memcpy(&c, src + i + 16, 8);
        memcpy(&d, src + i + 24, 8);
        a ^= k64; b ^= k64; c ^= k64; d ^= k64;
        memcpy(dst + i, &a, 8);
        memcpy(dst + i + 8, &b, 8);
        memcpy(dst + i + 16, &c, 8);
        memcpy(dst + i + 24, &d, 8);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t a;
        memcpy(&a, src + i, 8);
        a ^= k64;
        memcpy(dst + i, &a, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ k[i & 3];
    }
}

#ifdef BF_MASK_SSE2
static void bf_mask_sse2(unsigned char *dst, const unsigned char *src, size_t n, uint32_t key32)
{
    __m128i kv = _mm_set1_epi32((int)key32);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, kv));
    }
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, kv));
    }
    bf_mask_words(dst + i, src + i, n - i, key32);
}
#endif

#ifdef BF_MASK_AVX2
__attribute__((target("avx2")))
static void bf_mask_avx2(unsigned char *dst, const unsigned char *src, size_t n, uint32_t key32)
{
    __m256i kv = _mm256_set1_epi32((int)key32);
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 64), _mm256_xor_si256(c, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 96), _mm256_xor_si256(d, kv));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, kv));
    }
    /* < 32 bytes left: the SSE2 path (16-byte block) and the word/byte tails. */
    bf_mask_sse2(dst + i, src + i, n - i, key32);
}
#endif

#ifdef BF_MASK_SSE2
static bf_mask_fn bf_mask_best = bf_mask_sse2;
static const char *bf_mask_name = "sse2";
#else
static bf_mask_fn bf_mask_best = bf_mask_words;
static const char *bf_mask_name = "uint64";
#endif

/* Pick the widest implementation this CPU runs. Idempotent; call once at import. */
static void bf_mask_init(void)
{
#ifdef BF_MASK_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) {
        bf_mask_best = bf_mask_avx2;
        bf_mask_name = "avx2";
    }
#endif
}

static const char *bf_mask_impl(void)
{
    return bf_mask_name;
}

/* Force one implementation by name ("uint64", "sse2", "avx2"); -1 if this build/CPU lacks it. For tests, which
 * run every path on the machine at hand; production code never calls it. */
static int bf_mask_select(const char *name)
{
    if (strcmp(name, "uint64") == 0) {
        bf_mask_best = bf_mask_words;
        bf_mask_name = "uint64";
        return 0;
    }
#ifdef BF_MASK_SSE2
    if (strcmp(name, "sse2") == 0) {
        bf_mask_best = bf_mask_sse2;
        bf_mask_name = "sse2";
        return 0;
    }
#endif
#ifdef BF_MASK_AVX2
    if (strcmp(name, "avx2") == 0) {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2")) {
            return -1;
        }
        bf_mask_best = bf_mask_avx2;
        bf_mask_name = "avx2";
        return 0;
    }
#endif
    return -1;
}

/* dst[i] = src[i] ^ key[(phase + i) & 3]; small inputs skip the indirect call. */
static inline void bf_mask_copy(unsigned char *dst, const unsigned char *src, size_t n,
                                const unsigned char *key, size_t phase)
{
    unsigned char k[4];
    uint32_t key32;
    k[0] = key[phase & 3];
    k[1] = key[(phase + 1) & 3];
    k[2] = key[(phase + 2) & 3];
    k[3] = key[(phase + 3) & 3];
    if (n < 16) {
        size_t i;
        for (i = 0; i < n; i++) {
            dst[i] = src[i] ^ k[i & 3];
        }
        return;
    }
    memcpy(&key32, k, 4);
    bf_mask_best(dst, src, n, key32);
}

#endif /* BASTION_FAST_MASK_H */
