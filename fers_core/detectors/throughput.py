"""Progress in the log for long per-pixel detectors: pixels per second and the time left."""

import time


def _duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ThroughputLog:
    """Logs pixels per second and the estimated time left: after the first tile, then every `every` seconds."""

    def __init__(self, feedback, total_pixels, what, every=30.0):
        self.feedback, self.total, self.what, self.every = feedback, max(1, int(total_pixels)), what, every
        self.started = time.perf_counter()
        self.last = None

    def __call__(self, done_pixels):
        now = time.perf_counter()
        if done_pixels >= self.total or (self.last is not None and now - self.last < self.every):
            return
        self.last = now
        rate = done_pixels / max(now - self.started, 1e-9)
        left = (self.total - done_pixels) / max(rate, 1e-9)
        self.feedback.info(f"{self.what}: {done_pixels:,} of {self.total:,} pixels, {rate:,.0f} pixels/s, "
                           f"about {_duration(left)} left.")
