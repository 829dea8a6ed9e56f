/* A fork-join parallel for over contiguous ranges; each index is handled by exactly one thread. */
#include <pthread.h>
#include <stdlib.h>

#include "soniq_cpu.h"

typedef struct {
    soniq_range_fn fn;
    void *ctx;
    int64_t lo, hi;
} range_task;

static void *run_task(void *arg) {
    range_task *t = (range_task *)arg;
    t->fn(t->ctx, t->lo, t->hi);
    return NULL;
}

int soniq_parallel_for(int n_threads, int64_t total, soniq_range_fn fn, void *ctx) {
    if (total <= 0)
        return 0;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > total)
        n_threads = (int)total;
    if (n_threads == 1) {
        fn(ctx, 0, total);
        return 0;
    }
    range_task *tasks = (range_task *)calloc((size_t)n_threads, sizeof(range_task));
    pthread_t *ids = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
    int *started = (int *)calloc((size_t)n_threads, sizeof(int));
    if (!tasks || !ids || !started) {
        free(tasks); free(ids); free(started);
        return -1;
    }
    for (int t = 0; t < n_threads; t++) {
        tasks[t].fn = fn;
        tasks[t].ctx = ctx;
        tasks[t].lo = total * t / n_threads;
        tasks[t].hi = total * (t + 1) / n_threads;
    }
    /* thread 0's range runs on the calling thread; a failed spawn runs inline */
    for (int t = 1; t < n_threads; t++)
        started[t] = pthread_create(&ids[t], NULL, run_task, &tasks[t]) == 0;
    run_task(&tasks[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
        else
            run_task(&tasks[t]);
    }
    free(tasks); free(ids); free(started);
    return 0;
}
