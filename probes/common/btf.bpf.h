/* Putting into an object's BTF what its Go mirrors are checked against. */
#ifndef COMMON_BTF_BPF_H
#define COMMON_BTF_BPF_H

/* BTF carries a type only when something uses it: this puts enum e, and so every member, into the object's
 * BTF, where the collector's tests compare them with their Go mirrors (8 bytes of .bss, no code). */
#define BTF_ENUM(e) const enum e *e##_btf __attribute__((unused))

#endif
