/*
 * clock.c - the daemon's two clocks (clock.h).
 */
#include <time.h>

#include "backend/util/clock.h"

int64_t dl_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dl_now_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

int64_t dl_mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}
