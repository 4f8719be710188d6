/* The benchmark's "floor" knob, shared by every program of an object. */
#ifndef COMMON_FLOOR_BPF_H
#define COMMON_FLOOR_BPF_H

#include "vmlinux.h"

/* Benchmark "floor": every program returns at once, so `make bench` can measure what the hooks alone cost. */
const volatile bool floor_only = false;

#endif
