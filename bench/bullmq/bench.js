// BullMQ contender of the postsched benchmarks: one delayed job per post.
//
//   node bench.js run --redis URL --jobs JOBS.json --out OUT.json [--concurrency N] [--timeout-s S]
//   node bench.js memory --redis URL --count N --out OUT.json
//
// `run` adds one delayed job per entry of JOBS.json ({"queue", "jobs": [{"id", "due_ms"}]}),
// works them with one Worker whose processor does nothing but record when it
// started, and writes [id, due_ms, start_ms, completed_ms] per job to OUT.json.
// `memory` adds N jobs due in a week, lets an idle Worker run, and writes the
// process's resident set size to OUT.json.
"use strict";

const fs = require("node:fs");
const { performance } = require("node:perf_hooks");
const { Queue, Worker } = require("bullmq");

const ADD_CHUNK = 1000;
const WEEK_MS = 7 * 24 * 3600 * 1000;
const IDLE_WAIT_MS = 5000;

function nowMs() {
  return performance.timeOrigin + performance.now();
}

function parseArgs(argv) {
  const [command, ...rest] = argv;
  const options = {};
  for (let index = 0; index < rest.length; index += 2) {
    const key = rest[index];
    if (!key.startsWith("--") || index + 1 >= rest.length) {
      throw new Error(`invalid argument ${key}; write options as --name value`);
    }
    options[key.slice(2)] = rest[index + 1];
  }
  return { command, options };
}

function connectionFor(url) {
  const parsed = new URL(url);
  if (!["127.0.0.1", "localhost", "[::1]"].includes(parsed.hostname)) {
    throw new Error(`the benchmark only uses a loopback Redis, not ${parsed.hostname}`);
  }
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    db: Number(parsed.pathname.slice(1) || 0),
    maxRetriesPerRequest: null,
  };
}

async function addJobs(queue, jobs) {
  for (let start = 0; start < jobs.length; start += ADD_CHUNK) {
    const now = Date.now();
    const chunk = jobs.slice(start, start + ADD_CHUNK).map((job) => ({
      name: "post",
      data: { id: job.id, due_ms: job.due_ms },
      opts: {
        jobId: job.id,
        delay: Math.max(0, Math.round(job.due_ms - now)),
        removeOnComplete: true,
        removeOnFail: true,
      },
    }));
    await queue.addBulk(chunk);
  }
}

async function run(options) {
  const connection = connectionFor(options.redis);
  const spec = JSON.parse(fs.readFileSync(options.jobs, "utf8"));
  const concurrency = Number(options.concurrency || 1);
  const timeoutMs = Number(options["timeout-s"] || 600) * 1000;
  const started = new Map();
  const results = [];

  const queue = new Queue(spec.queue, { connection });
  const worker = new Worker(
    spec.queue,
    async (job) => {
      started.set(job.id, nowMs());
    },
    { connection, concurrency },
  );
  let finish;
  const finished = new Promise((resolve) => {
    finish = resolve;
  });
  worker.on("completed", (job) => {
    results.push([job.id, job.data.due_ms, started.get(job.id), nowMs()]);
    if (results.length === spec.jobs.length) finish();
  });
  worker.on("error", (error) => console.error(`worker error: ${error.message}`));
  await worker.waitUntilReady();

  const addStartMs = nowMs();
  await addJobs(queue, spec.jobs);
  const addedMs = nowMs();
  console.error(`added ${spec.jobs.length} delayed jobs in ${(addedMs - addStartMs).toFixed(0)} ms`);

  const timer = setTimeout(finish, timeoutMs);
  await finished;
  clearTimeout(timer);
  await worker.close();
  await queue.close();

  fs.writeFileSync(
    options.out,
    JSON.stringify({ concurrency, add_ms: addedMs - addStartMs, results }),
  );
  if (results.length !== spec.jobs.length) {
    console.error(`timed out: ${results.length} of ${spec.jobs.length} jobs completed`);
    process.exitCode = 1;
  }
}

async function memory(options) {
  const connection = connectionFor(options.redis);
  const count = Number(options.count);
  const queueName = `memory-${count}`;
  const dueMs = Date.now() + WEEK_MS;
  const jobs = Array.from({ length: count }, (_, index) => ({ id: `m${index}`, due_ms: dueMs }));

  const queue = new Queue(queueName, { connection });
  const worker = new Worker(queueName, async () => {}, { connection });
  await worker.waitUntilReady();
  await addJobs(queue, jobs);
  await new Promise((resolve) => setTimeout(resolve, IDLE_WAIT_MS));
  if (global.gc) global.gc();
  const rssBytes = process.memoryUsage().rss;
  await worker.close();
  await queue.close();
  fs.writeFileSync(options.out, JSON.stringify({ count, rss_bytes: rssBytes }));
}

async function main() {
  const { command, options } = parseArgs(process.argv.slice(2));
  if (command === "run") {
    await run(options);
  } else if (command === "memory") {
    await memory(options);
  } else {
    throw new Error(`unknown command ${command}; use "run" or "memory"`);
  }
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(2);
});
