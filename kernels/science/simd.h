// The two attributes the hand-vectorised science kernels (layers.cc, lanes.cc) are built with.
#pragma once

// One body, three instruction sets: GCC compiles the function for AVX-512, AVX2+FMA and baseline
// x86-64, and the loader picks the best the CPU has.
#define LOOM_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

// Always inlined, so each target clone of its caller compiles it for that clone's instruction
// set (a separate function would be compiled for baseline x86-64 only).
#define LOOM_INLINE inline __attribute__((always_inline))
