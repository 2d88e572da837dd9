"""Load test of `bayesrm serve` on loopback: correctness under 64 concurrent clients, latency,
throughput against direct batched scoring, and a kill -9 / restart in the middle.

Model: a 4-member head ensemble on the embedded all-MiniLM-L6-v2 (random heads; the cost is the
backbone's), max_length 64, reward ``up:beta2=1``; texts are real HH-RLHF (prompt, chosen) pairs.

1. Throughput, interleaved A B A B (ROUNDS rounds): A = direct ``scorer.score(all, batch_size=64)``
   in this process; B = the server (a separate process, one torch thread like A) answering
   REQUESTS one-sample requests from CLIENTS concurrent clients (POST /score). Every answer is
   checked: mean, std and members equal direct scoring of the same text (|diff| <= 1e-4), and
   the reward equals mu - (sigma - u_bar) with the u_bar the server reports for that batch.
   Reported: throughput ratio server / direct per round (median and range), p50 / p99 latency.
2. Kill and restart: the server saves its state before answering each batch (save_interval_s 0);
   half-way through KILL_REQUESTS it is killed with SIGKILL and started again on the same port;
   clients retry until answered. Checked: no wrong answer, none lost, the restored running
   statistics hold every answered sample (count >= the largest count any answer reported), and
   the final count = answers + samples scored twice (scored, saved, killed before answering).

Bounded: fixed request counts and a wall-clock limit (--time-limit); loopback only.

    flock /tmp/bayesrm-heavy.lock nice -n 15 python benchmarks/serve_load.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TOL = 1e-4
MAX_LENGTH = 64


def build_model(directory: Path) -> None:
    from bayesrm.models.reward_model import RewardModelConfig
    from bayesrm.uncertainty.base import EnsembleConfig
    from bayesrm.uncertainty.heads import HeadEnsemble

    config = RewardModelConfig(backbone="minilm", lora_r=0, max_length=MAX_LENGTH)
    HeadEnsemble.from_config(config, EnsembleConfig(members=4, seed=0)).save_pretrained(directory)


def load_texts(n: int) -> tuple[list[str], list[str]]:
    from bayesrm.data.loading import embedded_hh_harmless_path, load_preferences

    pairs = load_preferences(embedded_hh_harmless_path()).pairs
    prompts = [p.prompt if isinstance(p.prompt, str) else json.dumps(p.prompt) for p in pairs]
    responses = [p.chosen for p in pairs]
    return [prompts[i % len(prompts)] for i in range(n)], [responses[i % len(responses)] for i in range(n)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, state_dir: Path, log: Path, limit_s: float = 300) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "bayesrm.cli.main", "serve", "--model", str(model), "--reward", "up:beta2=1",
        "--port", str(port), "--chat-template", "none", "--state-dir", str(state_dir), "--save-interval-s", "0",
        "--max-batch", "64", "--batch-size", "64", "--max-wait-ms", "5", "--max-text-chars", "100000",
    ]
    seen = len(log.read_text()) if log.exists() else 0  # a restart appends to the same log
    proc = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if re.search(rf"listening on http://127\.0\.0\.1:{port}", log.read_text()[seen:]):
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start in time")


async def drive(url: str, prompts: list[str], responses: list[str], clients: int, deadline: float,
                on_answer=None) -> tuple[dict[int, dict], list[float], int]:
    """Send one request per text from `clients` workers; retry on connection errors until deadline."""
    import httpx

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(prompts)):
        queue.put_nowait(i)
    answers: dict[int, dict] = {}
    latencies: list[float] = []
    retries = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal retries
        while not queue.empty() and time.monotonic() < deadline:
            i = queue.get_nowait()
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    r = await client.post(url + "/score", json={"prompts": [prompts[i]], "responses": [responses[i]]})
                except httpx.TransportError:
                    retries += 1
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code >= 500:
                    retries += 1
                    await asyncio.sleep(0.2)
                    continue
                r.raise_for_status()
                latencies.append(time.perf_counter() - started)
                answers[i] = r.json()
                if on_answer is not None:
                    on_answer(len(answers), answers[i])
                break

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=180, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return answers, latencies, retries


def check(answers: dict[int, dict], direct) -> int:
    """Number of wrong answers: mean / std / members off direct scoring, or a reward off its formula."""
    wrong = 0
    for i, a in answers.items():
        mean, std, u_bar = a["mean"][0], a["std"][0], a["state"]["u_bar"]
        ok = abs(mean - float(direct.mean[i])) <= TOL and abs(std - float(direct.std[i])) <= TOL
        ok &= all(abs(m - float(d)) <= TOL for m, d in zip(a["members"][0], direct.members[:, i]))
        ok &= abs(a["reward"][0] - (mean - (std - u_bar))) <= 1e-5
        wrong += not ok
    return wrong


def health(url: str) -> dict:
    import httpx

    return httpx.get(url + "/health", timeout=30).json()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per throughput round")
    parser.add_argument("--kill-requests", type=int, default=1000, help="requests in the kill / restart phase")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (direct, server)")
    parser.add_argument("--time-limit", type=float, default=1200, help="wall-clock bound of the whole run (s)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    run_deadline = time.monotonic() + args.time_limit

    import torch

    from bayesrm.registry import load_scorer

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="serve_load."))
    build_model(work / "model")
    scorer = load_scorer(work / "model")
    prompts, responses = load_texts(args.requests)
    direct = scorer.score(prompts, responses, batch_size=64)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "server.log"
    server = start_server(work / "model", port, work / "state", log)
    box = {"server": server}
    figures: dict = {"requests": args.requests, "clients": args.clients, "rounds": []}
    try:
        asyncio.run(drive(url, prompts[:128], responses[:128], args.clients, run_deadline))  # warm-up
        all_latencies: list[float] = []
        for r in range(args.rounds):
            started = time.perf_counter()
            scorer.score(prompts, responses, batch_size=64)
            direct_s = time.perf_counter() - started
            started = time.perf_counter()
            answers, latencies, retries = asyncio.run(drive(url, prompts, responses, args.clients, run_deadline))
            server_s = time.perf_counter() - started
            lost, wrong = args.requests - len(answers), check(answers, direct)
            all_latencies += latencies
            row = {"direct_per_s": args.requests / direct_s, "server_per_s": len(answers) / server_s,
                   "ratio": (len(answers) / server_s) / (args.requests / direct_s), "lost": lost, "wrong": wrong,
                   "retries": retries}
            figures["rounds"].append(row)
            print(f"round {r}: direct {row['direct_per_s']:.1f}/s  server {row['server_per_s']:.1f}/s  "
                  f"ratio {row['ratio']:.2f}  lost {lost}  wrong {wrong}", flush=True)
        ratios = [row["ratio"] for row in figures["rounds"]]
        figures.update(ratio_median=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)],
                       p50_ms=1000 * pct(all_latencies, 0.5), p99_ms=1000 * pct(all_latencies, 0.99))
        figures["batching"] = health(url)["batching"]

        # ---- kill -9 and restart in the middle -------------------------------------------------
        n = min(args.kill_requests, args.requests)
        before = health(url)["state"]
        killed = {"done": False, "restarted": False, "max_count_old_server": 0}

        def kill_half_way(answered: int, answer: dict) -> None:
            if not killed["restarted"]:  # answered by the process that is killed
                killed["max_count_old_server"] = max(killed["max_count_old_server"], answer["state"]["up_count"])
            if not killed["done"] and answered >= n // 2:
                killed["done"] = True
                box["server"].send_signal(signal.SIGKILL)

        async def phase():
            task = asyncio.create_task(drive(url, prompts[:n], responses[:n], args.clients, run_deadline, kill_half_way))
            while not killed["done"]:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(box["server"].wait)
            await asyncio.sleep(0.5)  # answers already in flight from the dead process arrive or fail
            killed["restarted"] = True
            box["server"] = await asyncio.to_thread(start_server, work / "model", port, work / "state", log)
            restart = await asyncio.to_thread(health, url)
            return await task, restart

        (answers, _, retries), restart = asyncio.run(phase())
        server = box["server"]
        after = health(url)["state"]
        restored = restart["state"]["up_count"]
        figures["kill_restart"] = {
            "requests": n, "answered": len(answers), "lost": n - len(answers), "wrong": check(answers, direct),
            "retries": retries, "count_before_phase": before["up_count"], "restored_count": restored,
            "largest_count_answered_before_kill": killed["max_count_old_server"],
            "final_count": after["up_count"],
            "scored_twice": after["up_count"] - before["up_count"] - len(answers),
            "restored_holds_every_answer": restored >= killed["max_count_old_server"] > before["up_count"],
        }
        print(json.dumps(figures, indent=2), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        server = box["server"]
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
