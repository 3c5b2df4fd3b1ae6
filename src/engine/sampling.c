/* The thread's "passed over" mark for sampled tracing (sampling.rs).
 *
 * A MEM/OBJ allocation that sampling passed over may call down into
 * PyMem_RawMalloc (pymalloc hands requests over 512 bytes to it) or malloc
 * and mmap (a new arena): those nested calls belong to the allocation above
 * and must pass too, or they would be sampled a second time. The exact path
 * knows this from its re-entrancy guard, which the passed-over path skips to
 * stay cheap; this mark stands in for it. Initial-exec TLS, as in
 * native/preload.c: no __tls_get_addr call, a load and a store. */

static __thread int hs_passing_over __attribute__((tls_model("initial-exec")));

void
hs_pass_over_begin(void)
{
    hs_passing_over = 1;
}

void
hs_pass_over_end(void)
{
    hs_passing_over = 0;
}

int
hs_passing_over_now(void)
{
    return hs_passing_over;
}
