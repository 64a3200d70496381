"""Wait for a running PECMAE app and classify one clip through its API: ``ping_app.py URL CLIP EXPECTED``."""

from __future__ import annotations

import sys
import time


def main(url: str, clip: str, expected: str, timeout: float = 180.0) -> int:
    from gradio_client import Client, handle_file

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            client = Client(url, verbose=False)
            break
        except Exception as exc:  # not up yet
            last = exc
            time.sleep(1.0)
    else:
        print(f"app at {url} did not answer within {timeout:.0f} s: {last}", file=sys.stderr)
        return 1
    result = client.predict(handle_file(clip), api_name="/classify")
    label = result[0]["label"] if isinstance(result, (list, tuple)) else result["label"]
    print(f"{url}: {clip} -> {label}")
    return 0 if label == expected else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
