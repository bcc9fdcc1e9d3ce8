/*
 * notafilter.c - a shared object that loads but is no Portcullis filter
 *
 * It exports no portcullis_filter symbol, so a "module =" naming it must
 * stop start-up (and `portcullis -t`) with the file, line and key.
 * tests/integration/test_pipeline.py uses tests/plugins/.libs/notafilter.so.
 * Built by "make check", never installed.
 */

/* notafilter_answer - something to export, so that the object is not empty */
int notafilter_answer(void);

int notafilter_answer(void)
{
	return 42;
}
