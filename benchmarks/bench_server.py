"""Throughput, latency and memory of the reward server on loopback, beside the in-process reward file in the same run.

OpenRLHF 0.11.2's own reward client does the work on both sides: `SingleTurnAgentExecutor` with the
server's URL (`_fetch_rewards_via_http`: one sample per request, a new connection each, five tries) and
with the reward file's path (`_fetch_rewards_via_func`: the file's `reward_func` in a thread), each from
the same number of concurrent tasks over the same samples. Then aiohttp clients over kept-alive
connections, one sample and 64 samples a request, and OpenRLHF's client again while two clients send
slow 4.5 MB requests (a prompt that is not in its query: a long string search) to show what small
requests wait meanwhile. Every answer is checked against the reward file's own rewards; an error is a
failed request, a non-200 status, a retry by OpenRLHF's client or a wrong reward (the target is zero).
The server's memory (all its processes) is taken before and after OpenRLHF's load (target: within 20%).
The clients share the machine's cores with the server's workers, so on a small machine throughput is a
floor.

    python benchmarks/bench_server.py [--workers 2] [--requests 100000] [--clients 32] [--batch 64] [--batches 100]
"""

import argparse
import asyncio
import logging
import statistics
import time

import aiohttp
import psutil
from bench_reward import PROMPT, SENTENCE, load_reward_func
from openrlhf.utils.agent import SingleTurnAgentExecutor

from med_rlvr_plugin import openrlhf_reward, serve

TIMEOUT = aiohttp.ClientTimeout(total=180)  # OpenRLHF's
SLOW = {"query": ["a" * 3_000_000], "prompts": ["a" * 1_500_000 + "b"], "labels": ["B"]}


class Retries(logging.Handler):
    """Counts the failed tries OpenRLHF's client logs (it retries them, so they show only here)."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        Retries.count += "error" in record.getMessage()


def samples(count: int) -> list[tuple[str, str, str]]:
    """(query, prompt, label): about 255 thinking words, a mix of right, wrong and malformed answers."""
    responses = [f"<think>{SENTENCE * 15}</think>\n<answer>{letter}</answer><|endoftext|>" for letter in "CCAB"]
    responses.append(f"{SENTENCE * 15} The answer is C.<|endoftext|>")
    return [(PROMPT + responses[index % len(responses)], PROMPT, "C") for index in range(count)]


async def load(call, jobs: list, expected: list, clients: int) -> dict:
    """`await call(job)` for every job from `clients` concurrent tasks; latencies, errors, wall time."""
    latencies, errors = [], 0
    todo = iter(zip(jobs, expected, strict=True))  # shared by the tasks: each takes the next job

    async def client() -> None:
        nonlocal errors
        for job, rewards in todo:
            start = time.perf_counter()
            try:
                answer = await call(job)
            except (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError):
                answer = None
            latencies.append(time.perf_counter() - start)
            errors += answer != rewards

    retries, start = Retries.count, time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {"wall": wall, "latencies": sorted(latencies), "errors": errors + Retries.count - retries}


def openrlhf_call(target: str):
    """One sample through OpenRLHF's executor: over HTTP to `target`, or in-process when it is the file."""
    executor = SingleTurnAgentExecutor(remote_rm_url=target)
    fetch = executor._fetch_rewards_via_func if executor.reward_func else executor._fetch_rewards_via_http

    async def call(sample: tuple[str, str, str]) -> float:
        (answer,) = await fetch(*([part] for part in sample))
        return answer["rewards"]

    return call


def aiohttp_call(session: aiohttp.ClientSession, url: str):
    async def call(body: dict) -> list | float | None:
        async with session.post(url, json=body) as response:
            return (await response.json())["rewards"] if response.status == 200 else None

    return call


async def with_slow_requests(url: str, small, clients: int = 2) -> tuple[dict, int]:
    """Run the `small` load while `clients` tasks send the slow request back to back; (its result, how
    many slow requests were answered meanwhile)."""
    done, answered = asyncio.Event(), 0

    async def slow() -> None:
        nonlocal answered
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            while not done.is_set():
                async with session.post(url, json=SLOW) as response:
                    answered += response.status == 200 and (await response.json())["rewards"] == -1.0

    tasks = [asyncio.create_task(slow()) for _ in range(clients)]
    result = await small
    done.set()
    await asyncio.gather(*tasks)
    return result, answered


def batches(data: list[tuple[str, str, str]], size: int) -> list[dict]:
    return [
        dict(zip(("query", "prompts", "labels"), map(list, zip(*data[i : i + size], strict=True)), strict=True))
        for i in range(0, len(data), size)
    ]


def rss_mb(server: psutil.Process) -> float:
    return sum(part.memory_info().rss for part in [server, *server.children(recursive=True)]) / (1 << 20)


def cpu_seconds(server: psutil.Process) -> float:
    """User and system CPU time of the server and its worker processes."""
    return sum(sum(part.cpu_times()[:2]) for part in [server, *server.children()])


def row(name: str, result: dict, count: int, baseline: float | None, server_us: float | None = None) -> None:
    latencies, rate = result["latencies"], count / result["wall"]
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    ratio = f"{rate / baseline:.2f}" if baseline else "1"
    cpu = f"{server_us:,.0f}" if server_us is not None else ""
    print(
        f"| {name} | {len(latencies):,} | {rate:,.0f} | {ratio} | {statistics.median(latencies) * 1e3:.1f} | "
        f"{p99 * 1e3:.1f} | {result['errors']} | {cpu} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--requests", type=int, default=100_000, help="one-sample requests through OpenRLHF's client")
    parser.add_argument("--clients", type=int, default=32, help="concurrent OpenRLHF client tasks")
    parser.add_argument("--batch", type=int, default=64, help="samples per batched request")
    parser.add_argument("--batches", type=int, default=100, help="batched requests, from 8 concurrent clients")
    args = parser.parse_args()
    logging.getLogger("openrlhf").addHandler(Retries())
    reward_func, data = load_reward_func(), samples(args.requests)
    rewards = [reward_func([query], [prompt], [label])["rewards"] for query, prompt, label in data]
    in_process_call = openrlhf_call(openrlhf_reward.__file__)  # OpenRLHF logs that it loads the file
    print(f"reward server, {args.workers} workers, on 127.0.0.1; load {psutil.getloadavg()[0]:.1f} at the start")
    print("| load | requests | samples/s | vs in-process | p50 ms | p99 ms | errors | server CPU us/sample |")
    print("|---|---|---|---|---|---|---|---|")
    in_process = asyncio.run(load(in_process_call, data, rewards, args.clients))
    baseline = len(data) / in_process["wall"]
    row(f"in-process reward file, OpenRLHF's executor, {args.clients} tasks", in_process, len(data), None)
    process, url = serve.start(args=["--workers", str(args.workers)])
    server = psutil.Process(process.pid)
    try:
        asyncio.run(load(openrlhf_call(url), data[:1000], rewards[:1000], args.clients))  # warm-up
        memory, cpu = rss_mb(server), cpu_seconds(server)
        served = asyncio.run(load(openrlhf_call(url), data, rewards, args.clients))
        server_us = (cpu_seconds(server) - cpu) / len(data) * 1e6
        row(
            f"server, OpenRLHF's client (a new connection each), {args.clients} tasks",
            served,
            len(data),
            baseline,
            server_us,
        )
        after = rss_mb(server)
        kept_alive(args, url, data, rewards, baseline, reward_func)
        small = load(openrlhf_call(url), data[:5000], rewards[:5000], args.clients)
        result, slow = asyncio.run(with_slow_requests(url, small))
        row(
            f"server, OpenRLHF's client while 2 clients send 4.5 MB slow requests ({slow} answered)",
            result,
            5000,
            baseline,
        )
        print(
            f"\nserver memory (all processes): {memory:,.0f} MB before {len(data):,} requests, {after:,.0f} MB after "
            f"({after / memory:.2f}x); load {psutil.getloadavg()[0]:.1f} at the end"
        )
    finally:
        process.terminate()
        process.wait()


def kept_alive(args: argparse.Namespace, url: str, data: list, rewards: list, baseline: float, reward_func) -> None:
    """aiohttp over kept-alive connections: one sample a request, then batches."""
    singles = [{"query": [q], "prompts": [p], "labels": [label]} for q, p, label in data[:5000]]
    many = batches(samples(args.batch * args.batches), args.batch)
    expected = [reward_func(body["query"], body["prompts"], body["labels"])["rewards"] for body in many]

    async def run(bodies, answers, clients):
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(timeout=TIMEOUT, connector=connector) as session:
            return await load(aiohttp_call(session, url), bodies, answers, clients)

    row(
        f"server, aiohttp kept-alive, 1 sample/request, {args.clients} clients",
        asyncio.run(run(singles, rewards[:5000], args.clients)),
        len(singles),
        baseline,
    )
    row(
        f"server, aiohttp kept-alive, {args.batch} samples/request, 8 clients",
        asyncio.run(run(many, expected, 8)),
        args.batch * len(many),
        baseline,
    )


if __name__ == "__main__":
    main()
