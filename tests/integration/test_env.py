"""The worker environment contract (TORCHRUN.md §Worker environment, issue
2 §3), checked on the real binary with the print-env helper: every variable
with torchrun's exact formulas for 8 workers, static multi-node ranks, the
OMP_NUM_THREADS rule, inheritance, PET_* fallbacks and --standalone."""

import os

import harness


def run_print_env(test, args, env=None, nproc=None, timeout=30):
    r = test.agent(args + ["--no-python", harness.helper("print-env")], env=env)
    test.assertExit(r, 0, timeout=timeout)
    envs = harness.parse_json_lines(r.output("out"))
    if nproc is not None:
        test.assertEqual(len(envs), nproc,
                         f"expected {nproc} worker environments, got {len(envs)}:\n{r.tail()}")
    return r, envs


class EnvContract(harness.ProcessTest):
    def check_contract(self, envs, *, nnodes, node_rank, nproc, master_addr, master_port,
                       run_id, max_restarts, role="default", restart=0, complete=True):
        if complete:
            self.assertEqual(sorted(int(e["LOCAL_RANK"]) for e in envs), list(range(nproc)))
        error_files = set()
        for e in envs:
            i = int(e["LOCAL_RANK"])
            rank = node_rank * nproc + i
            want = {
                "LOCAL_RANK": i,
                "RANK": rank,
                "GROUP_RANK": node_rank,
                "ROLE_RANK": rank,
                "ROLE_NAME": role,
                "LOCAL_WORLD_SIZE": nproc,
                "WORLD_SIZE": nnodes * nproc,
                "GROUP_WORLD_SIZE": nnodes,
                "ROLE_WORLD_SIZE": nnodes * nproc,
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": master_port,
                "TORCHELASTIC_RESTART_COUNT": restart,
                "TORCHELASTIC_MAX_RESTARTS": max_restarts,
                "TORCHELASTIC_RUN_ID": run_id,
                "JOB_RESTART_COUNT": restart,
                "TORCH_NCCL_ASYNC_ERROR_HANDLING": 1,
                "NCCL_ASYNC_ERROR_HANDLING": 1,
            }
            if nproc > 1:
                want["OMP_NUM_THREADS"] = 1
            for key, value in want.items():
                with self.subTest(local_rank=i, key=key):
                    self.assertIn(key, e, f"local rank {i} lacks {key}")
                    self.assertEqual(e[key], str(value), f"local rank {i}: {key}")
            # torchrun 1.13's static backend says "True" because its agent
            # hosts a TCPStore on MASTER_PORT that env:// workers join as
            # clients; an agent without one must say "False" or workers
            # hang. Either way it is a Python bool string, the same on
            # every rank (test_torch_gloo proves the value works).
            with self.subTest(local_rank=i, key="TORCHELASTIC_USE_AGENT_STORE"):
                self.assertIn(e.get("TORCHELASTIC_USE_AGENT_STORE"), ("True", "False"))
                self.assertEqual(e["TORCHELASTIC_USE_AGENT_STORE"],
                                 envs[0]["TORCHELASTIC_USE_AGENT_STORE"])
            ef = e.get("TORCHELASTIC_ERROR_FILE", "")
            with self.subTest(local_rank=i, key="TORCHELASTIC_ERROR_FILE"):
                self.assertTrue(os.path.isabs(ef), f"error file not absolute: {ef!r}")
                self.assertTrue(ef.endswith(f"/attempt_{restart}/{i}/error.json"),
                                f"local rank {i}: error file {ef!r}")
            error_files.add(ef)
        self.assertEqual(len(error_files), len(envs), "error files are not distinct per rank")

    def test_eight_workers_defaults(self):
        r, envs = run_print_env(self, ["--nproc-per-node", "8"], nproc=8)
        self.check_contract(envs, nnodes=1, node_rank=0, nproc=8, master_addr="127.0.0.1",
                            master_port=29500, run_id="none", max_restarts=0)
        # torchrun's warning when it sets OMP_NUM_THREADS itself.
        self.assertRegex(r.text("err"), r"OMP_NUM_THREADS")

    def test_eight_workers_explicit_flags(self):
        port = harness.free_port()
        r, envs = run_print_env(self, [
            "--nproc_per_node=8", "--rdzv-id", "job-42", "--max-restarts", "3",
            "--master-addr", "localhost", "--master_port", str(port), "--role", "trainer",
        ], nproc=8)
        self.check_contract(envs, nnodes=1, node_rank=0, nproc=8, master_addr="localhost",
                            master_port=port, run_id="job-42", max_restarts=3, role="trainer")

    def test_two_node_static_each_on_its_own(self):
        port = harness.free_port()
        for node_rank in (0, 1):
            with self.subTest(node_rank=node_rank):
                r, envs = run_print_env(self, [
                    "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "4",
                    "--rdzv-backend", "static", "--master-addr", "127.0.0.1",
                    "--master-port", str(port), "--rdzv-id", "two-nodes",
                ], nproc=4)
                self.check_contract(envs, nnodes=2, node_rank=node_rank, nproc=4,
                                    master_addr="127.0.0.1", master_port=port,
                                    run_id="two-nodes", max_restarts=0)
                self.assertEqual(sorted(int(e["RANK"]) for e in envs),
                                 [node_rank * 4 + i for i in range(4)])

    def test_sixty_four_workers(self):
        # 64 workers exit together: one SIGCHLD may stand for many exits,
        # so every one must still be reaped and counted.
        r, envs = run_print_env(self, ["--nproc-per-node", "64"], nproc=64, timeout=60)
        self.check_contract(envs, nnodes=1, node_rank=0, nproc=64, master_addr="127.0.0.1",
                            master_port=29500, run_id="none", max_restarts=0)

    def test_last_node_of_four(self):
        port = harness.free_port()
        r, envs = run_print_env(self, [
            "--nnodes=4", "--node_rank=3", "--nproc-per-node=8", "--rdzv_backend=static",
            "--master-addr=127.0.0.1", f"--master-port={port}",
        ], nproc=8)
        self.check_contract(envs, nnodes=4, node_rank=3, nproc=8, master_addr="127.0.0.1",
                            master_port=port, run_id="none", max_restarts=0)
        self.assertEqual(sorted(int(e["RANK"]) for e in envs), list(range(24, 32)))

    def test_restart_attempt_environment(self):
        # Every worker fails (HP_EXIT=1), so the group runs twice:
        # attempt 1 carries restart count 1 and its own error files. The
        # first failure stops the group, so a sibling may be killed before
        # it prints: each attempt shows at least one environment.
        r = self.agent(["--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-id", "again",
                        "--no-python", harness.helper("print-env")],
                       env=harness.base_env(HP_EXIT=1))
        self.assertExit(r, 1, timeout=60)
        envs = harness.parse_json_lines(r.output("out"))
        second = [e for e in envs if e.get("TORCHELASTIC_RESTART_COUNT") == "1"]
        self.assertIn(len(second), (1, 2), f"attempt 1 environments:\n{r.tail()}")
        self.check_contract(second, nnodes=1, node_rank=0, nproc=2, master_addr="127.0.0.1",
                            master_port=29500, run_id="again", max_restarts=1, restart=1,
                            complete=False)
        self.assertEqual({e["TORCHELASTIC_RESTART_COUNT"] for e in envs}, {"0", "1"})

    def test_single_worker_no_omp(self):
        r, envs = run_print_env(self, ["--nproc-per-node", "1"],
                                env=harness.base_env(OMP_NUM_THREADS=None), nproc=1)
        self.assertNotIn("OMP_NUM_THREADS", envs[0],
                         "torchrun only sets OMP_NUM_THREADS when nproc > 1")
        self.assertNotRegex(r.text("err"), r"OMP_NUM_THREADS")

    def test_parent_environment_inherited_and_overridden(self):
        env = harness.base_env(HP_TEST_INHERITED='a "quoted" value = with = signs',
                               OMP_NUM_THREADS="4", NCCL_ASYNC_ERROR_HANDLING="0",
                               TORCH_NCCL_ASYNC_ERROR_HANDLING="0",
                               RANK="999", LOCAL_RANK="77", WORLD_SIZE="1000")
        r, envs = run_print_env(self, ["--nproc-per-node", "3"], env=env, nproc=3)
        for e in envs:
            self.assertEqual(e.get("HP_TEST_INHERITED"), 'a "quoted" value = with = signs')
            self.assertEqual(e["OMP_NUM_THREADS"], "4", "a set OMP_NUM_THREADS is kept")
            self.assertEqual(e["NCCL_ASYNC_ERROR_HANDLING"], "0", "a set value is kept")
            self.assertEqual(e["TORCH_NCCL_ASYNC_ERROR_HANDLING"], "0", "a set value is kept")
            self.assertEqual(e["WORLD_SIZE"], "3")
            self.assertIn(e["RANK"], ("0", "1", "2"))
            self.assertEqual(e["RANK"], e["LOCAL_RANK"])
        self.assertNotRegex(r.text("err"), r"Setting OMP_NUM_THREADS",
                            "no warning when OMP_NUM_THREADS is set")

    def test_pet_environment_fallback(self):
        port = harness.free_port()
        env = harness.base_env(PET_NPROC_PER_NODE="3", PET_MAX_RESTARTS="2",
                               PET_MASTER_PORT=str(port), PET_RDZV_ID="from-pet")
        r, envs = run_print_env(self, [], env=env, nproc=3)
        for e in envs:
            self.assertEqual(e["LOCAL_WORLD_SIZE"], "3")
            self.assertEqual(e["TORCHELASTIC_MAX_RESTARTS"], "2")
            self.assertEqual(e["MASTER_PORT"], str(port))
            self.assertEqual(e["TORCHELASTIC_RUN_ID"], "from-pet")

    def test_flag_beats_pet_environment(self):
        env = harness.base_env(PET_NPROC_PER_NODE="3")
        run_print_env(self, ["--nproc-per-node", "2"], env=env, nproc=2)

    def test_standalone_picks_a_free_port(self):
        r, envs = run_print_env(self, ["--standalone", "--nproc-per-node", "2"], nproc=2)
        ports = {e["MASTER_PORT"] for e in envs}
        self.assertEqual(len(ports), 1)
        port = int(ports.pop())
        self.assertTrue(0 < port < 65536)
        self.assertNotEqual(port, 29500, "--standalone must pick a free port")
        for e in envs:
            self.assertEqual(e["WORLD_SIZE"], "2")
            self.assertEqual(e["GROUP_WORLD_SIZE"], "1")

    def test_script_arguments_pass_through_untouched(self):
        args = ["a b", "--nproc-per-node", "-x", "", "--", "$HOME", "ünï"]
        r = self.agent(["--nproc-per-node", "1", "--no-python", "/bin/sh", "-c",
                        'printf "<%s>" "$@"; echo', "sh"] + args)
        self.assertExit(r, 0)
        want = "".join(f"<{a}>" for a in args)
        self.assertIn(want, r.output("out"))


if __name__ == "__main__":
    harness.main()
