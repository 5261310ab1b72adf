"""Throughput and latency of the reward server on loopback, beside the in-process reward file in the same run.

A bounded load from concurrent aiohttp clients: one sample per request with a new connection each (what
OpenRLHF's client does), one sample per request over kept-alive connections, and batched requests. Every
answer is checked against the reward file's own rewards for that request; an error is a failed request,
a non-200 status or a wrong reward (the target is zero). The clients share the machine's cores with the
server's workers, so on a small machine the throughput is a floor; the CPU time the server's processes
and the clients spend per sample says what one core of each can carry.

    python benchmarks/bench_server.py [--workers 2] [--requests 3000] [--clients 64] [--batch 64] [--batches 100]
"""

import argparse
import asyncio
import statistics
import time

import aiohttp
import psutil
from bench_reward import PROMPT, SENTENCE, load_reward_func

from med_rlvr_plugin import serve


def samples(count: int) -> list[tuple[str, str, str]]:
    """(query, prompt, label): about 255 thinking words, a mix of right, wrong and malformed answers."""
    responses = [f"<think>{SENTENCE * 15}</think>\n<answer>{letter}</answer><|endoftext|>" for letter in "CCAB"]
    responses.append(f"{SENTENCE * 15} The answer is C.<|endoftext|>")
    return [(PROMPT + responses[index % len(responses)], PROMPT, "C") for index in range(count)]


async def load(url: str, bodies: list[dict], expected: list, clients: int, fresh: bool) -> dict:
    """Send every body from `clients` concurrent clients; latencies, errors, wall time."""
    latencies, errors = [], 0
    todo = iter(zip(bodies, expected, strict=True))  # shared by the clients: each takes the next body
    timeout = aiohttp.ClientTimeout(total=180)  # OpenRLHF's

    async def post(session: aiohttp.ClientSession, body: dict) -> list | float:
        async with session.post(url, json=body) as response:
            return (await response.json())["rewards"] if response.status == 200 else None

    async def client(shared: aiohttp.ClientSession) -> None:
        nonlocal errors
        for body, rewards in todo:
            start = time.perf_counter()
            try:
                if fresh:  # OpenRLHF opens a session, so a connection, per request
                    async with aiohttp.ClientSession(timeout=timeout) as session:
                        answer = await post(session, body)
                else:
                    answer = await post(shared, body)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                answer = None
            latencies.append(time.perf_counter() - start)
            errors += answer != rewards

    start = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)) as shared:
        await asyncio.gather(*(client(shared) for _ in range(clients)))
    return {"wall": time.perf_counter() - start, "latencies": sorted(latencies), "errors": errors}


def workloads(args: argparse.Namespace, reward_func) -> tuple[float, list[tuple]]:
    """The in-process reward file's samples/s, and each load to send: (name, bodies, the rewards each body
    must get, clients, a new connection per request, samples per request)."""
    data = samples(args.requests)
    start = time.perf_counter()
    rewards = [reward_func([query], [prompt], [label])["rewards"] for query, prompt, label in data]
    in_process = len(data) / (time.perf_counter() - start)
    singles = [{"query": [query], "prompts": [prompt], "labels": [label]} for query, prompt, label in data]
    batched = samples(args.batch * args.batches)
    batches = [
        dict(
            zip(
                ("query", "prompts", "labels"),
                map(list, zip(*batched[index : index + args.batch], strict=True)),
                strict=True,
            )
        )
        for index in range(0, len(batched), args.batch)
    ]
    batch_rewards = [reward_func(body["query"], body["prompts"], body["labels"])["rewards"] for body in batches]
    clients = args.clients
    return in_process, [
        (f"1 sample/request, new connection each, {clients} clients", singles, rewards, clients, True, 1),
        (f"1 sample/request, kept-alive connections, {clients} clients", singles, rewards, clients, False, 1),
        (
            f"{args.batch} samples/request, kept-alive connections, 8 clients",
            batches,
            batch_rewards,
            8,
            False,
            args.batch,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--requests", type=int, default=3000, help="one-sample requests per one-sample mode")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients sending one sample each")
    parser.add_argument("--batch", type=int, default=64, help="samples per batched request")
    parser.add_argument("--batches", type=int, default=100, help="batched requests, from 8 concurrent clients")
    args = parser.parse_args()
    in_process, runs = workloads(args, load_reward_func())
    process, url = serve.start(args=["--workers", str(args.workers)])
    server = psutil.Process(process.pid)
    try:
        print(
            f"reward server, {args.workers} workers, on 127.0.0.1; in-process reward file: {in_process:,.0f} samples/s"
        )
        print(
            f"{'load':>58} {'requests':>9} {'samples/s':>10} {'vs in-process':>14} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7} {'server CPU us/sample':>21} {'client CPU us/sample':>21}"
        )
        for name, bodies, expected, clients, fresh, per_request in runs:
            cpu_before, client_before = cpu_seconds(server), time.process_time()
            result = asyncio.run(load(url, bodies, expected, clients, fresh))
            count = len(bodies) * per_request
            server_us = (cpu_seconds(server) - cpu_before) / count * 1e6
            client_us = (time.process_time() - client_before) / count * 1e6
            latencies, rate = result["latencies"], count / result["wall"]
            p99 = latencies[int(0.99 * (len(latencies) - 1))]
            print(
                f"{name:>58} {len(bodies):>9} {rate:>10,.0f} {rate / in_process:>14.2f} "
                f"{statistics.median(latencies) * 1e3:>8.1f} {p99 * 1e3:>8.1f} "
                f"{result['errors']:>7} {server_us:>21,.0f} {client_us:>21,.0f}"
            )
    finally:
        process.terminate()
        process.wait()


def cpu_seconds(server: psutil.Process) -> float:
    """User and system CPU time of the server and its worker processes."""
    return sum(sum(part.cpu_times()[:2]) for part in [server, *server.children()])


if __name__ == "__main__":
    main()
