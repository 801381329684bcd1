package dev.forcelink.bench;

import io.debezium.embedded.Connect;
import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import io.debezium.engine.format.Json;
import java.lang.management.ManagementFactory;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.source.SourceRecord;

/**
 * Debezium's embedded Postgres engine reading an existing slot, counting the change
 * events its consumer receives: the Java side of bench/bench_debezium.py.
 *
 * <p>The consumer does nothing with an event but count it (and, in latency mode, read
 * its commit time), the analogue of forcelink's {@code --sink null}: the engine still
 * decodes pgoutput and builds each Debezium change event (a Kafka Connect
 * {@code SourceRecord}, or a JSON string with {@code -format json}).
 *
 * <p>The slot and the publication must exist (the Python side creates them before it
 * writes the workload); offsets live in memory, so with no stored offset the engine
 * streams from the slot's confirmed position. Prints {@code READY} once the task has
 * started, then one JSON line of results when {@code -expected} events have arrived (or
 * {@code -timeout} seconds have passed):
 *
 * <pre>
 * {"rows": 200000, "first_to_last_s": 3.1, "rows_per_s": 64000, "ready_to_last_s": 3.4,
 *  "startup_s": 1.9, "cpu_s": 4.2, "batches": 98, "p50_ms": ..., "p99_ms": ...}
 * </pre>
 *
 * <p>Latency (commit to delivery) is taken from {@code source.ts_us}, the commit time
 * pgoutput sends in microseconds, against the wall clock at delivery; only in
 * {@code -mode latency} with the Connect format.
 */
public final class CaptureBench {

    private static final String USAGE =
            "CaptureBench -host H -port P -user U -db D -slot S -publication PUB"
                    + " -expected N [-mode throughput|latency] [-format connect|json]"
                    + " [-poll-ms 5] [-max-batch 2048] [-queue 8192] [-timeout 600]"
                    + " [-skip 2000] [-dump latencies.txt]";

    private final Map<String, String> options;
    private final long expected;
    private final boolean latencyMode;
    private final CountDownLatch ready = new CountDownLatch(1);
    private final CountDownLatch done = new CountDownLatch(1);
    private final long started = System.nanoTime();
    private volatile long readyAt;
    private long firstAt;
    private long lastAt;
    private long firstCpu;
    private long lastCpu;
    private long count;
    private long batches;
    private long[] latencyMicros = new long[0];

    private CaptureBench(Map<String, String> options) {
        this.options = options;
        this.expected = Long.parseLong(required("expected"));
        this.latencyMode = options.getOrDefault("mode", "throughput").equals("latency");
        if (latencyMode) {
            latencyMicros = new long[(int) expected];
        }
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> options = parse(args);
        if (options.containsKey("help")) {
            System.out.println(USAGE);
            return;
        }
        new CaptureBench(options).run();
    }

    private static Map<String, String> parse(String[] args) {
        Map<String, String> options = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("-")) {
                throw new IllegalArgumentException("unexpected argument " + args[i] + "\n" + USAGE);
            }
            String name = args[i].replaceFirst("^-+", "");
            boolean flag = i + 1 >= args.length || args[i + 1].startsWith("-");
            options.put(name, flag ? "true" : args[++i]);
        }
        return options;
    }

    private String required(String name) {
        String value = options.get(name);
        if (value == null) {
            throw new IllegalArgumentException("missing -" + name + "\n" + USAGE);
        }
        return value;
    }

    /** Debezium settings: as shipped, except what reading an existing slot needs. */
    private Properties engineProperties() {
        Properties props = new Properties();
        props.setProperty("name", "forcelink-capture-bench");
        props.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        props.setProperty("offset.storage", "org.apache.kafka.connect.storage.MemoryOffsetBackingStore");
        props.setProperty("offset.flush.interval.ms", "10000");
        props.setProperty("database.hostname", required("host"));
        props.setProperty("database.port", required("port"));
        props.setProperty("database.user", required("user"));
        props.setProperty("database.password", options.getOrDefault("password", ""));
        props.setProperty("database.dbname", required("db"));
        props.setProperty("topic.prefix", "bench");
        props.setProperty("plugin.name", "pgoutput");
        props.setProperty("slot.name", required("slot"));
        props.setProperty("publication.name", required("publication"));
        props.setProperty("publication.autocreate.mode", "disabled");
        props.setProperty("snapshot.mode", "no_data");
        props.setProperty("table.include.list", options.getOrDefault("tables", "public.bench"));
        // Debezium waits poll.interval.ms (500 by default) whenever its queue is
        // empty; the forcelink reader hands a batch over after at most 5 ms.
        props.setProperty("poll.interval.ms", options.getOrDefault("poll-ms", "5"));
        props.setProperty("max.batch.size", options.getOrDefault("max-batch", "2048"));
        props.setProperty("max.queue.size", options.getOrDefault("queue", "8192"));
        props.setProperty("converter.schemas.enable", options.getOrDefault("schemas", "false"));
        return props;
    }

    private void run() throws Exception {
        String format = options.getOrDefault("format", "connect");
        if (latencyMode && !format.equals("connect")) {
            throw new IllegalArgumentException("-mode latency needs -format connect");
        }
        DebeziumEngine<?> engine = format.equals("json") ? jsonEngine() : connectEngine();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);

        ready.await();
        System.out.println("READY");
        System.out.flush();
        long timeout = Long.parseLong(options.getOrDefault("timeout", "600"));
        boolean finished = done.await(timeout, TimeUnit.SECONDS);
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        String dump = options.get("dump");
        if (dump != null && latencyMode) {
            // Latencies in arrival order, one per line (µs): to see when stalls happen.
            StringBuilder text = new StringBuilder();
            for (int i = 0; i < Math.min(count, latencyMicros.length); i++) {
                text.append(latencyMicros[i]).append('\n');
            }
            java.nio.file.Files.writeString(java.nio.file.Path.of(dump), text);
        }
        System.out.println(results(finished));
        System.out.flush();
        System.exit(0);
    }

    private DebeziumEngine<RecordChangeEvent<SourceRecord>> connectEngine() {
        return DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
                .using(engineProperties())
                .using(callback())
                .using(this::completed)
                .notifying(this::connectBatch)
                .build();
    }

    private DebeziumEngine<ChangeEvent<String, String>> jsonEngine() {
        return DebeziumEngine.create(Json.class)
                .using(engineProperties())
                .using(callback())
                .using(this::completed)
                .notifying(this::jsonBatch)
                .build();
    }

    private DebeziumEngine.ConnectorCallback callback() {
        return new DebeziumEngine.ConnectorCallback() {
            @Override
            public void taskStarted() {
                readyAt = System.nanoTime();
                ready.countDown();
            }
        };
    }

    private void completed(boolean success, String message, Throwable error) {
        if (!success) {
            System.err.println("engine stopped: " + message);
            if (error != null) {
                error.printStackTrace();
            }
        }
        // Unblock main whatever happened: it prints what was counted.
        ready.countDown();
        done.countDown();
    }

    private void connectBatch(
            List<RecordChangeEvent<SourceRecord>> records,
            DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
            throws InterruptedException {
        long now = System.nanoTime();
        if (latencyMode) {
            Instant moment = Instant.now();
            long nowMicros = moment.getEpochSecond() * 1_000_000L + moment.getNano() / 1_000;
            for (RecordChangeEvent<SourceRecord> event : records) {
                Struct value = (Struct) event.record().value();
                long committed = value.getStruct("source").getInt64("ts_us");
                if (count < latencyMicros.length) {
                    latencyMicros[(int) count] = nowMicros - committed;
                }
                count++;
            }
        } else {
            count += records.size();
        }
        for (RecordChangeEvent<SourceRecord> event : records) {
            committer.markProcessed(event);
        }
        committer.markBatchFinished();
        delivered(now);
    }

    private void jsonBatch(
            List<ChangeEvent<String, String>> records,
            DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
            throws InterruptedException {
        long now = System.nanoTime();
        count += records.size();
        for (ChangeEvent<String, String> event : records) {
            committer.markProcessed(event);
        }
        committer.markBatchFinished();
        delivered(now);
    }

    private void delivered(long now) {
        if (batches++ == 0) {
            firstAt = now;
            firstCpu = processCpuNanos();
        }
        lastAt = now;
        if (count >= expected) {
            lastCpu = processCpuNanos();
            done.countDown();
        }
    }

    /** CPU time of the whole JVM (every thread): on a busy machine, the fairer figure. */
    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /**
     * p99 leaving out the first {@code -skip} changes (the Python side passes the
     * first seconds' worth): a fresh JVM stalls while the first changes arrive.
     */
    private long steadyP99() {
        int skip = Integer.parseInt(options.getOrDefault("skip", "2000"));
        int end = (int) Math.min(count, latencyMicros.length);
        if (end <= skip) {
            return 0;
        }
        long[] steady = Arrays.copyOfRange(latencyMicros, skip, end);
        Arrays.sort(steady);
        return steady[(int) (steady.length * 0.99)];
    }

    private String results(boolean finished) {
        List<String> fields = new ArrayList<>();
        fields.add(String.format(Locale.ROOT, "\"finished\": %b", finished));
        fields.add(String.format(Locale.ROOT, "\"rows\": %d", count));
        fields.add(String.format(Locale.ROOT, "\"batches\": %d", batches));
        fields.add(String.format(Locale.ROOT, "\"startup_s\": %.2f", (readyAt - started) / 1e9));
        if (count > 0) {
            double span = (lastAt - firstAt) / 1e9;
            fields.add(String.format(Locale.ROOT, "\"first_to_last_s\": %.3f", span));
            fields.add(String.format(Locale.ROOT, "\"ready_to_last_s\": %.3f", (lastAt - readyAt) / 1e9));
            if (lastCpu > 0) {
                fields.add(String.format(Locale.ROOT, "\"cpu_s\": %.2f", (lastCpu - firstCpu) / 1e9));
            }
            if (span > 0) {
                fields.add(String.format(Locale.ROOT, "\"rows_per_s\": %d", Math.round(count / span)));
            }
        }
        if (latencyMode && count > 0) {
            long[] sorted = Arrays.copyOf(latencyMicros, (int) Math.min(count, latencyMicros.length));
            Arrays.sort(sorted);
            fields.add(String.format(Locale.ROOT, "\"p50_ms\": %.1f", sorted[sorted.length / 2] / 1000.0));
            fields.add(String.format(Locale.ROOT, "\"p99_ms\": %.1f", sorted[(int) (sorted.length * 0.99)] / 1000.0));
            fields.add(String.format(Locale.ROOT, "\"max_ms\": %.1f", sorted[sorted.length - 1] / 1000.0));
            fields.add(String.format(Locale.ROOT, "\"p99_warm_ms\": %.1f", steadyP99() / 1000.0));
        }
        return "{" + String.join(", ", fields) + "}";
    }
}
