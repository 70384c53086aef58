/* The INT8 multiply-add peak of one core: AVX-512 VNNI vpdpbusd (64 u8 x s8 products summed into
 * 16 int32 lanes per instruction) on 12 independent accumulators, so that neither memory nor the
 * instruction's latency limits it, only how many the core issues per cycle. benchmarks/run.py builds
 * it with the system's C compiler and runs one copy per core at once.
 * Prints giga multiply-adds per second. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 200000000L;
    volatile char seed = 1; /* not a constant the compiler could fold */
    __m512i a = _mm512_set1_epi8(seed), b = _mm512_set1_epi8((char)(seed + 1));
    /* different starting values, so the compiler cannot merge the accumulators into one */
    __m512i c0 = _mm512_set1_epi32(seed), c1 = _mm512_set1_epi32(seed + 1), c2 = _mm512_set1_epi32(seed + 2),
            c3 = _mm512_set1_epi32(seed + 3), c4 = _mm512_set1_epi32(seed + 4), c5 = _mm512_set1_epi32(seed + 5),
            c6 = _mm512_set1_epi32(seed + 6), c7 = _mm512_set1_epi32(seed + 7), c8 = _mm512_set1_epi32(seed + 8),
            c9 = _mm512_set1_epi32(seed + 9), c10 = _mm512_set1_epi32(seed + 10), c11 = _mm512_set1_epi32(seed + 11);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < iterations; i++) {
        c0 = _mm512_dpbusd_epi32(c0, a, b), c1 = _mm512_dpbusd_epi32(c1, a, b);
        c2 = _mm512_dpbusd_epi32(c2, a, b), c3 = _mm512_dpbusd_epi32(c3, a, b);
        c4 = _mm512_dpbusd_epi32(c4, a, b), c5 = _mm512_dpbusd_epi32(c5, a, b);
        c6 = _mm512_dpbusd_epi32(c6, a, b), c7 = _mm512_dpbusd_epi32(c7, a, b);
        c8 = _mm512_dpbusd_epi32(c8, a, b), c9 = _mm512_dpbusd_epi32(c9, a, b);
        c10 = _mm512_dpbusd_epi32(c10, a, b), c11 = _mm512_dpbusd_epi32(c11, a, b);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                   _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
    long long checksum = _mm512_reduce_add_epi32(sum);
    double seconds = (end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) * 1e-9;
    printf("%.1f %lld\n", iterations * 12.0 * 64 / seconds / 1e9, checksum);
    return 0;
}
