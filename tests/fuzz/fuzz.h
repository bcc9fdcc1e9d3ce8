/*
 * fuzz.h - what every fuzz target of tests/fuzz shares: libFuzzer's
 * entry point and must(), the check of a property the parser promises
 * (a failed one aborts, and libFuzzer keeps the input as a crash)
 */
#ifndef PORTCULLIS_FUZZ_H
#define PORTCULLIS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* must - abort with a message when a property does not hold */
#define must(cond)                                                       \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "%s:%d: property failed: %s\n",  \
				__FILE__, __LINE__, #cond);              \
			abort();                                         \
		}                                                        \
	} while (0)

#endif
