// tools/bench/stats.cc: see stats.h.
#include "tools/bench/stats.h"

#include <cstdio>

namespace ringrelay::bench {
namespace {

void appendf(std::string& out, const char* format, auto... args) {
    char buf[256];
    const int n = std::snprintf(buf, sizeof buf, format, args...);
    if (n > 0) out.append(buf, static_cast<std::size_t>(n) < sizeof buf ? static_cast<std::size_t>(n) : sizeof buf - 1);
}

void append_json_string(std::string& out, std::string_view s) {
    out.push_back('"');
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(ch);
        } else if (c < 0x20 || c == 0x7f) {
            appendf(out, "\\u%04x", static_cast<unsigned>(c));
        } else {
            out.push_back(ch);
        }
    }
    out.push_back('"');
}

// 1234567 -> "1,234,567".
std::string grouped(std::uint64_t n) {
    std::string digits = std::to_string(n);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
        out.push_back(digits[i]);
    }
    return out;
}

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }
double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

void append_latency_json(std::string& out, const core::histogram& h) {
    appendf(out,
            "{\"count\":%llu,\"min\":%.3f,\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,"
            "\"max\":%.3f}",
            static_cast<unsigned long long>(h.count()), us(h.min()), h.mean() / 1000.0, us(h.percentile(50)),
            us(h.percentile(90)), us(h.percentile(99)), us(h.percentile(99.9)), us(h.max()));
}

void append_codes_json(std::string& out, const std::array<std::uint64_t, reply_code_slots>& codes) {
    out.push_back('{');
    bool first = true;
    for (std::size_t code = 0; code < codes.size(); ++code) {
        if (codes[code] == 0) continue;
        appendf(out, "%s\"%zu\":%llu", first ? "" : ",", code, static_cast<unsigned long long>(codes[code]));
        first = false;
    }
    out.push_back('}');
}

std::string codes_text(const std::array<std::uint64_t, reply_code_slots>& codes) {
    std::string out;
    for (std::size_t code = 0; code < codes.size(); ++code) {
        if (codes[code] == 0) continue;
        if (!out.empty()) out += ", ";
        appendf(out, "%zu: %s", code, grouped(codes[code]).c_str());
    }
    return out.empty() ? "none" : out;
}

const char* mode_name(run_mode m) { return m == run_mode::messages ? "messages" : "duration"; }

}  // namespace

void run_stats::merge(const run_stats& other) {
    ack_ns.merge(other.ack_ns);
    transaction_ns.merge(other.transaction_ns);
    accepted += other.accepted;
    transient_failures += other.transient_failures;
    permanent_failures += other.permanent_failures;
    local_refusals += other.local_refusals;
    lost_in_transaction += other.lost_in_transaction;
    for (std::size_t i = 0; i < reply_code_slots; ++i) {
        replies[i] += other.replies[i];
        session_replies[i] += other.session_replies[i];
    }
    connections_opened += other.connections_opened;
    connect_errors += other.connect_errors;
    connections_lost += other.connections_lost;
    timeouts += other.timeouts;
    unsent += other.unsent;
    for (const auto& [text, n] : other.errors) errors[text] += n;
    for (const auto& [code, text] : other.reply_texts) reply_texts.try_emplace(code, text);
    if (other.last_outcome_ns > last_outcome_ns) last_outcome_ns = other.last_outcome_ns;
}

double messages_per_second(const run_report& report, const run_stats& stats) noexcept {
    return report.seconds > 0 ? static_cast<double>(stats.accepted) / report.seconds : 0;
}

int exit_code(const run_report& report, const run_stats& stats) noexcept {
    if (report.gave_up || stats.failed() > 0 || stats.accepted == 0) return 1;
    if (report.options->mode == run_mode::messages && stats.accepted != report.options->messages) return 1;
    return 0;
}

std::string format_text(const run_report& report, const run_stats& s) {
    const bench_options& o = *report.options;
    std::string out;
    appendf(out, "ringrelay-bench: %s, %u connection%s, %u shard%s, %llu-byte messages, %u recipient%s, ",
            o.target_text.c_str(), o.connections, o.connections == 1 ? "" : "s", o.shards, o.shards == 1 ? "" : "s",
            static_cast<unsigned long long>(o.size), o.recipients, o.recipients == 1 ? "" : "s");
    if (o.rate > 0) {
        appendf(out, "open loop at %.1f messages/s", o.rate);
    } else {
        out += "closed loop";
    }
    out += o.pipelining == protocol::extension_use::never ? ", no pipelining" : "";
    out += o.chunking == protocol::extension_use::when_offered ? ", chunking" : "";
    out += "\n";
    appendf(out, "messages     %s completed: %s accepted, %s failed, in %.3f s\n", grouped(s.completed()).c_str(),
            grouped(s.accepted).c_str(), grouped(s.failed()).c_str(), report.seconds);
    const double rate = messages_per_second(report, s);
    appendf(out, "throughput   %s messages/s, %.2f million messages/hour (accepted)\n",
            grouped(static_cast<std::uint64_t>(rate + 0.5)).c_str(), rate * 3600 / 1e6);
    if (!s.ack_ns.empty()) {
        appendf(out, "ack latency  p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
                ms(s.ack_ns.percentile(50)), ms(s.ack_ns.percentile(90)), ms(s.ack_ns.percentile(99)),
                ms(s.ack_ns.percentile(99.9)), ms(s.ack_ns.max()));
        appendf(out, "transaction  p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", ms(s.transaction_ns.percentile(50)),
                ms(s.transaction_ns.percentile(99)), ms(s.transaction_ns.max()));
    }
    out += "replies      " + codes_text(s.replies) + "\n";
    for (const auto& [code, text] : s.reply_texts) appendf(out, "  %u %s\n", static_cast<unsigned>(code), text.c_str());
    if (s.failed() > 0) {
        appendf(out,
                "failures     %s transient (4xx), %s permanent (5xx), %s refused locally, %s lost mid-transaction\n",
                grouped(s.transient_failures).c_str(), grouped(s.permanent_failures).c_str(),
                grouped(s.local_refusals).c_str(), grouped(s.lost_in_transaction).c_str());
    }
    const std::string session = codes_text(s.session_replies);
    if (session != "none") out += "session      refused with " + session + "\n";
    appendf(out, "connections  %s opened, %s connect errors, %s lost, %s timeouts\n",
            grouped(s.connections_opened).c_str(), grouped(s.connect_errors).c_str(),
            grouped(s.connections_lost).c_str(), grouped(s.timeouts).c_str());
    if (s.unsent > 0)
        appendf(out, "unsent       %s scheduled messages never sent (no free connection)\n", grouped(s.unsent).c_str());
    for (const auto& [text, n] : s.errors) out += "error        " + text + " (x" + grouped(n) + ")\n";
    if (report.gave_up)
        appendf(out, "gave up: no SMTP session could be opened within %.3g s (--timeout)\n", o.timeout_seconds);
    if (report.interrupted) out += "interrupted\n";
    return out;
}

std::string format_json(const run_report& report, const run_stats& s) {
    const bench_options& o = *report.options;
    std::string out = "{\"target\":";
    append_json_string(out, o.target_text);
    appendf(out, ",\"connections\":%u,\"shards\":%u,\"size\":%llu,\"recipients\":%u,\"mode\":\"%s\",", o.connections,
            o.shards, static_cast<unsigned long long>(o.size), o.recipients, mode_name(o.mode));
    if (o.rate > 0) {
        appendf(out, "\"rate\":%.3f,", o.rate);
    } else {
        out += "\"rate\":null,";
    }
    appendf(out, "\"pipelining\":%s,\"chunking\":%s,",
            o.pipelining == protocol::extension_use::never ? "false" : "true",
            o.chunking == protocol::extension_use::never ? "false" : "true");
    const double rate = messages_per_second(report, s);
    appendf(out,
            "\"messages\":%llu,\"accepted\":%llu,\"failed\":%llu,\"seconds\":%.6f,\"messages_per_second\":%.1f,"
            "\"messages_per_hour\":%.0f,",
            static_cast<unsigned long long>(s.completed()), static_cast<unsigned long long>(s.accepted),
            static_cast<unsigned long long>(s.failed()), report.seconds, rate, rate * 3600);
    out += "\"ack_latency_us\":";
    append_latency_json(out, s.ack_ns);
    out += ",\"transaction_latency_us\":";
    append_latency_json(out, s.transaction_ns);
    out += ",\"replies\":";
    append_codes_json(out, s.replies);
    out += ",\"session_replies\":";
    append_codes_json(out, s.session_replies);
    appendf(
        out,
        ",\"failures\":{\"transient\":%llu,\"permanent\":%llu,\"local_refusals\":%llu,\"lost_in_transaction\":%llu}",
        static_cast<unsigned long long>(s.transient_failures), static_cast<unsigned long long>(s.permanent_failures),
        static_cast<unsigned long long>(s.local_refusals), static_cast<unsigned long long>(s.lost_in_transaction));
    appendf(out, ",\"connection_events\":{\"opened\":%llu,\"connect_errors\":%llu,\"lost\":%llu,\"timeouts\":%llu}",
            static_cast<unsigned long long>(s.connections_opened), static_cast<unsigned long long>(s.connect_errors),
            static_cast<unsigned long long>(s.connections_lost), static_cast<unsigned long long>(s.timeouts));
    appendf(out, ",\"unsent\":%llu,\"errors\":{", static_cast<unsigned long long>(s.unsent));
    bool first = true;
    for (const auto& [text, n] : s.errors) {
        if (!first) out.push_back(',');
        first = false;
        append_json_string(out, text);
        appendf(out, ":%llu", static_cast<unsigned long long>(n));
    }
    out += "},\"reply_texts\":{";
    first = true;
    for (const auto& [code, text] : s.reply_texts) {
        appendf(out, "%s\"%u\":", first ? "" : ",", static_cast<unsigned>(code));
        first = false;
        append_json_string(out, text);
    }
    appendf(out, "},\"gave_up\":%s,\"interrupted\":%s}\n", report.gave_up ? "true" : "false",
            report.interrupted ? "true" : "false");
    return out;
}

}  // namespace ringrelay::bench
