"""Prints every message of a JetStream stream, one line each (headers as JSON, then the data),
read back with nats-py as any consumer of the stream would. Used by erasure.rs to search the stream
for personal data. Arguments: NATS URL, stream name, expected message count (waits for it)."""

import asyncio
import json
import sys

import nats
from nats.errors import TimeoutError as NatsTimeout


async def main(url, stream, expected):
    nc = await nats.connect(url)
    js = nc.jetstream()
    for _ in range(200):  # the relay may still be publishing: wait for the count, up to 20 s
        info = await js.stream_info(stream)
        if info.state.messages >= expected:
            break
        await asyncio.sleep(0.1)
    info = await js.stream_info(stream)
    total = info.state.messages
    read = 0
    sub = await js.subscribe(f"{info.config.subjects[0]}", stream=stream, ordered_consumer=True)
    while read < total:
        try:
            message = await sub.next_msg(timeout=5)
        except NatsTimeout:
            break
        read += 1
        print(json.dumps(dict(message.headers or {})), message.data.decode("utf-8", "replace"))
    await nc.close()
    print(f"# read {read} of {total}", file=sys.stderr)
    if read < expected:
        sys.exit(f"read {read} messages, expected at least {expected}")


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
