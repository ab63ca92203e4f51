"""Locust traffic of loadtest/locustfile.py under a ramp: the shape that makes an autoscaled
deployment grow and then shrink. Users rise linearly to --ramp-users over --ramp-s seconds,
stay there --hold-s seconds, drop to --tail-users for --tail-s seconds (the lull in which the
replicas added for the peak are removed while requests still arrive), then the run stops.

    locust -f loadtest/ramp.py --headless -H http://127.0.0.1:8000 --ramp-users 16 --ramp-s 30 \
        --hold-s 120 --tail-users 2 --tail-s 900 --summary-json out/summary.json

The user count and run time come from the shape: -u, -r and -t are ignored.
"""

from __future__ import annotations

from locust import LoadTestShape, events
from locustfile import OpenAIUser  # noqa: F401  (the users, scenarios and run summary of the plain run)


@events.init_command_line_parser.add_listener
def _add_ramp_arguments(parser) -> None:
    parser.add_argument("--ramp-users", type=int, default=8, help="users at the peak")
    parser.add_argument("--ramp-s", type=float, default=10.0, help="seconds from 0 to the peak")
    parser.add_argument("--hold-s", type=float, default=30.0, help="seconds at the peak")
    parser.add_argument("--tail-users", type=int, default=1, help="users after the peak")
    parser.add_argument("--tail-s", type=float, default=30.0, help="seconds of the tail")


class RampShape(LoadTestShape):
    def tick(self):
        options = self.runner.environment.parsed_options
        t = self.get_run_time()
        peak = options.ramp_users
        if t < options.ramp_s:
            return max(1, round(peak * t / options.ramp_s)), peak
        if t < options.ramp_s + options.hold_s:
            return peak, peak
        if t < options.ramp_s + options.hold_s + options.tail_s:
            return options.tail_users, peak  # locust stops the surplus users after their request
        return None
