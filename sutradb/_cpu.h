/* What the CPU (and the operating system) can run, asked once at import.
 *
 * sutra_cpu_features() returns a bit set of SUTRA_CPU_* below. An instruction-set
 * extension counts only when the CPU reports it (cpuid) *and* the operating system
 * saves the register state it needs (xgetbv: YMM for AVX/AVX2, opmask + ZMM for
 * AVX-512), as the Intel manual prescribes. GCC/clang (<cpuid.h>) and MSVC
 * (<intrin.h>) are supported; on other architectures the set is empty, and the
 * portable kernels are the only ones built.
 *
 * This file is compiled into every kernel level, including the portable one, and
 * uses no instruction beyond the platform's baseline: it is safe on any CPU.
 */
#ifndef SUTRADB_CPU_H
#define SUTRADB_CPU_H

#include <stdint.h>
#include <string.h>

#define SUTRA_CPU_SSE42      (1u << 0)
#define SUTRA_CPU_POPCNT     (1u << 1)
#define SUTRA_CPU_AVX        (1u << 2)
#define SUTRA_CPU_AVX2       (1u << 3)
#define SUTRA_CPU_FMA        (1u << 4)
#define SUTRA_CPU_F16C       (1u << 5)
#define SUTRA_CPU_BMI1       (1u << 6)
#define SUTRA_CPU_BMI2       (1u << 7)
#define SUTRA_CPU_LZCNT      (1u << 8)
#define SUTRA_CPU_MOVBE      (1u << 9)
#define SUTRA_CPU_AVX512F    (1u << 10)
#define SUTRA_CPU_AVX512DQ   (1u << 11)
#define SUTRA_CPU_AVX512CD   (1u << 12)
#define SUTRA_CPU_AVX512BW   (1u << 13)
#define SUTRA_CPU_AVX512VL   (1u << 14)
#define SUTRA_CPU_AVX512VBMI (1u << 15)
#define SUTRA_CPU_AVX512VNNI (1u << 16)
#define SUTRA_CPU_NEON       (1u << 17)

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define SUTRA_X86 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static inline void sutra_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    int v[4];
    __cpuidex(v, (int)leaf, (int)sub);
    r[0] = (unsigned)v[0]; r[1] = (unsigned)v[1]; r[2] = (unsigned)v[2]; r[3] = (unsigned)v[3];
}
static inline uint64_t sutra_xgetbv0(void) { return (uint64_t)_xgetbv(0); }
#else
#include <cpuid.h>
static inline void sutra_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static inline uint64_t sutra_xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));  /* xgetbv */
    return ((uint64_t)hi << 32) | lo;
}
#endif
#endif

/* 1: GenuineIntel, 2: AuthenticAMD or HygonGenuine (Zen cores), 0: other */
static inline int sutra_cpu_vendor(void)
{
#ifdef SUTRA_X86
    unsigned r[4];
    char v[13];
    sutra_cpuid(0, 0, r);
    memcpy(v, &r[1], 4); memcpy(v + 4, &r[3], 4); memcpy(v + 8, &r[2], 4);
    v[12] = 0;
    if (!strcmp(v, "GenuineIntel")) return 1;
    if (!strcmp(v, "AuthenticAMD") || !strcmp(v, "HygonGenuine")) return 2;
#endif
    return 0;
}

static inline unsigned sutra_cpu_features(void)
{
    unsigned f = 0;
#ifdef SUTRA_X86
    unsigned r[4], maxleaf, maxext;
    uint64_t xcr0 = 0;
    int os_ymm = 0, os_zmm = 0;
    sutra_cpuid(0, 0, r);
    maxleaf = r[0];
    if (maxleaf < 1) return 0;
    sutra_cpuid(1, 0, r);
    if (r[2] & (1u << 20)) f |= SUTRA_CPU_SSE42;
    if (r[2] & (1u << 23)) f |= SUTRA_CPU_POPCNT;
    if (r[2] & (1u << 22)) f |= SUTRA_CPU_MOVBE;
    if (r[2] & (1u << 27)) {                       /* OSXSAVE: xgetbv is usable */
        xcr0 = sutra_xgetbv0();
        os_ymm = (xcr0 & 0x6) == 0x6;              /* XMM + YMM state */
        os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;  /* opmask, ZMM_Hi256, Hi16_ZMM */
    }
    if (os_ymm) {
        if (r[2] & (1u << 28)) f |= SUTRA_CPU_AVX;
        if (r[2] & (1u << 12)) f |= SUTRA_CPU_FMA;
        if (r[2] & (1u << 29)) f |= SUTRA_CPU_F16C;
    }
    if (maxleaf >= 7) {
        unsigned b, c;
        sutra_cpuid(7, 0, r);
        b = r[1]; c = r[2];
        if (b & (1u << 3)) f |= SUTRA_CPU_BMI1;
        if (b & (1u << 8)) f |= SUTRA_CPU_BMI2;
        if (os_ymm && (b & (1u << 5))) f |= SUTRA_CPU_AVX2;
        if (os_zmm) {
            if (b & (1u << 16)) f |= SUTRA_CPU_AVX512F;
            if (b & (1u << 17)) f |= SUTRA_CPU_AVX512DQ;
            if (b & (1u << 28)) f |= SUTRA_CPU_AVX512CD;
            if (b & (1u << 30)) f |= SUTRA_CPU_AVX512BW;
            if (b & (1u << 31)) f |= SUTRA_CPU_AVX512VL;
            if (c & (1u << 1)) f |= SUTRA_CPU_AVX512VBMI;
            if (c & (1u << 11)) f |= SUTRA_CPU_AVX512VNNI;
        }
    }
    sutra_cpuid(0x80000000u, 0, r);
    maxext = r[0];
    if (maxext >= 0x80000001u) {
        sutra_cpuid(0x80000001u, 0, r);
        if (r[2] & (1u << 5)) f |= SUTRA_CPU_LZCNT;
    }
#elif defined(__aarch64__) || defined(_M_ARM64)
    f |= SUTRA_CPU_NEON;                           /* part of the ARMv8-A baseline */
#endif
    return f;
}

#endif /* SUTRADB_CPU_H */
