// bench/command_parser_bench.cc: parse_command() throughput on typical pipelined SMTP
// command lines (RFC 5321 §4.1), and the server session handling a whole pipelined
// transaction. Outputs are checked against expected values before timing.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/address.h"
#include "protocol/command_parser.h"
#include "protocol/server_session.h"

namespace {

using namespace ringrelay::protocol;

const std::vector<std::string> lines = {
    "EHLO client.example.net\r\n",
    "MAIL FROM:<bounce-1234567@mailer.example.net> SIZE=48213 BODY=8BITMIME\r\n",
    "RCPT TO:<first.last@example.org>\r\n",
    "RCPT TO:<someone.else+tag@sub.example.com>\r\n",
    "DATA\r\n",
    "RSET\r\n",
    "BDAT 65536 LAST\r\n",
    "QUIT\r\n",
};

std::size_t total_bytes() {
    std::size_t n = 0;
    for (const auto& l : lines) n += l.size();
    return n;
}

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "reference check failed: %s\n", what);
        std::abort();
    }
}

void BM_CommandParser_TypicalLines(benchmark::State& state) {
    const auto mail = parse_command(lines[1]);
    check(mail && mail->verb == command_verb::mail && mail->argument == "<bounce-1234567@mailer.example.net>" &&
              mail->parameters == "SIZE=48213 BODY=8BITMIME",
          "MAIL line");
    const auto bdat = parse_command(lines[6]);
    check(bdat && bdat->chunk_size == 65536 && bdat->chunk_end == bdat_end::last, "BDAT line");
    for (auto _ : state) {
        for (const auto& l : lines) {
            auto cmd = parse_command(l);
            benchmark::DoNotOptimize(cmd);
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * total_bytes()));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * lines.size()));
}
BENCHMARK(BM_CommandParser_TypicalLines);

void BM_CommandParser_ParsePath(benchmark::State& state) {
    const std::string path = "<someone.else+tag@sub.example.com>";
    const auto p = parse_path(path, path_kind::forward_path);
    check(p && p->mailbox == "someone.else+tag@sub.example.com" && p->domain == "sub.example.com", "path");
    for (auto _ : state) {
        auto r = parse_path(path, path_kind::forward_path);
        benchmark::DoNotOptimize(r);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * path.size()));
}
BENCHMARK(BM_CommandParser_ParsePath);

class bench_host final : public session_host {
public:
    std::uint64_t next_queue_id() noexcept override { return ++_id; }
    std::string_view rfc5322_date() noexcept override { return "Sat, 28 Nov 2026 03:35:26 +0000"; }

private:
    std::uint64_t _id = 0;
};

// One session, many pipelined transactions of 3 recipients and a small body.
void BM_ServerSession_PipelinedTransaction(benchmark::State& state) {
    server_config config;
    config.hostname = "mx.example.net";
    config.relay_domains = {"example.org"};
    const std::string tx =
        "MAIL FROM:<bounce@mailer.example.net> SIZE=100\r\nRCPT TO:<a@example.org>\r\n"
        "RCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
        "Subject: hello\r\n\r\nA short body line.\r\n.\r\n";
    bench_host host;
    server_session s(config, client_info{"192.0.2.1", relay_trust::untrusted}, host);
    std::string out;
    s.start(out);
    (void)s.feed("EHLO client.example.net\r\n", out);
    out.clear();
    std::size_t n = s.feed(tx, out);
    check(n == tx.size() && s.message_ready() && s.message_envelope().rcpt_to.size() == 3, "transaction");
    s.commit_done(commit_result::ok, out);
    check(out.find("250 2.0.0 Ok: queued as 0000000000000001\r\n") != std::string::npos, "queued reply");
    for (auto _ : state) {
        out.clear();
        n = s.feed(tx, out);
        s.commit_done(commit_result::ok, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * tx.size()));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ServerSession_PipelinedTransaction);

}  // namespace

BENCHMARK_MAIN();
