// queue/dkim_signer.cc: see dkim_signer.h.
#include "queue/dkim_signer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/ascii.h"
#include "core/duration.h"

namespace ringrelay::queue {

namespace dkim = protocol::dkim;

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = core::ascii_lower(c);
    return out;
}

std::expected<std::string, std::string> read_key_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::unexpected(std::string(std::strerror(errno)));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) return std::unexpected(std::string("read error"));
    return text.str();
}

// Signatures handed back to a shard together when a signing thread finds more waiting
// (core/work_pool.h): one wake-up of the shard for up to this many; a signature then waits for
// at most seven more (about 2 ms with RSA-2048 here), and only under load. bench/dkim_ab.py,
// two rounds each against main: 8 gave RSA-2048 +11% msg/s and Ed25519 +2%, 4 gave +3% and
// +6% (within this machine's noise of about 5%; bench/results/issue16-dkim-perf.md).
constexpr std::size_t signatures_gathered = 8;

// The pool: one thread per core, and room for as many waiting jobs as there can be
// connections (each has at most one message at its end of data).
unsigned pool_threads() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

}  // namespace

std::expected<std::shared_ptr<const dkim_keys>, std::string> dkim_keys::load(const core::config& config) {
    auto table = std::make_shared<dkim_keys>();
    for (const std::string& spec : config.dkim_keys) {
        // DOMAIN:SELECTOR:KEYFILE (core/config checked the form; the file name may hold ':').
        const std::size_t first = spec.find(':');
        const std::size_t second = spec.find(':', first + 1);
        dkim_key k;
        k.domain = lower(std::string_view(spec).substr(0, first));
        if (!k.domain.empty() && k.domain.back() == '.') k.domain.pop_back();
        k.selector = spec.substr(first + 1, second - first - 1);
        k.file = spec.substr(second + 1);
        const std::string where = "--dkim-key " + spec + ": ";
        if (!dkim::valid_tag_text(k.domain))
            return std::unexpected(where + "the domain is not dot-separated letters, digits, '-' and '_'");
        if (!dkim::valid_tag_text(k.selector))
            return std::unexpected(where + "the selector is not dot-separated letters, digits, '-' and '_'");
        auto pem = read_key_file(k.file);
        if (!pem) return std::unexpected(where + k.file + ": " + pem.error());
        auto key = dkim::parse_private_key(*pem);
        std::fill(pem->begin(), pem->end(), '\0');  // the copy of the private key we no longer need
        if (!key) return std::unexpected(where + k.file + ": " + std::string(dkim::describe(key.error())));
        k.key = std::move(*key);
        for (const dkim_key& other : table->_keys)
            if (other.domain == k.domain && other.selector == k.selector)
                return std::unexpected(where + "a second key for " + k.selector + "._domainkey." + k.domain +
                                       " (one selector publishes one key)");
        table->_keys.push_back(std::move(k));
    }
    table->_sign_all = lower(config.dkim_sign_all);
    if (!table->_sign_all.empty() && table->_sign_all.back() == '.') table->_sign_all.pop_back();
    auto canon = dkim::parse_canonicalization(config.dkim_canonicalization);
    if (!canon) return std::unexpected("--dkim-canonicalization: '" + config.dkim_canonicalization + "' is not valid");
    table->_canon = *canon;
    if (config.dkim_headers.empty()) {
        const auto defaults = dkim::default_header_names();
        table->_header_views.assign(defaults.begin(), defaults.end());
    } else {
        for (const std::string& h : config.dkim_headers) table->_header_names.push_back(lower(h));
        table->_header_views.assign(table->_header_names.begin(), table->_header_names.end());
    }
    table->_oversigned = dkim::oversigned_header_names();
    if (!config.dkim_expiration.empty()) {
        auto d = core::parse_duration(config.dkim_expiration);
        if (!d || d->count() <= 0) return std::unexpected("--dkim-expiration: '" + config.dkim_expiration + "' is not a positive duration");
        table->_expiration_s = std::chrono::duration_cast<std::chrono::seconds>(*d).count();
    }
    return std::shared_ptr<const dkim_keys>(std::move(table));
}

void dkim_keys::select(std::string_view author, std::vector<const dkim_key*>& out) const {
    // The author's domain, then each parent (mail.example.org -> example.org -> org).
    std::string_view domain = author;
    while (!domain.empty()) {
        bool found = false;
        for (const dkim_key& k : _keys)
            if (k.domain == domain) {
                out.push_back(&k);
                found = true;
            }
        if (found) break;
        const std::size_t dot = domain.find('.');
        domain = dot == std::string_view::npos ? std::string_view() : domain.substr(dot + 1);
    }
    if (_sign_all.empty() || domain == _sign_all) return;
    for (const dkim_key& k : _keys)
        if (k.domain == _sign_all) out.push_back(&k);
}

std::string dkim_keys::describe() const {
    if (_keys.empty()) return "DKIM: off (no --dkim-key)";
    std::string out = "DKIM: " + std::to_string(_keys.size()) + " key(s):";
    for (const dkim_key& k : _keys) {
        out += ' ';
        out += dkim::summary(k.key.alg, k.domain, k.selector);
        if (k.key.alg == dkim::algorithm::rsa_sha256) out += " (" + std::to_string(k.key.bits) + " bits)";
        out += " from " + k.file + ';';
    }
    out += " c=" + dkim::canonicalization_text(_canon);
    if (!_sign_all.empty()) out += "; every message is also signed for " + _sign_all;
    if (_expiration_s) out += "; signatures expire after " + std::to_string(*_expiration_s) + " s";
    if (!_header_names.empty()) out += "; --dkim-headers given";
    return out;
}

std::expected<std::unique_ptr<dkim_signer>, std::string> dkim_signer::create(const core::config& config) {
    auto keys = dkim_keys::load(config);
    if (!keys) return std::unexpected(keys.error());
    return std::make_unique<dkim_signer>(config, std::move(*keys));
}

dkim_signer::dkim_signer(const core::config& config, std::shared_ptr<const dkim_keys> keys)
    : _config(config),
      _keys(std::move(keys)),
      _caches([] {
          std::vector<std::unique_ptr<protocol::dkim::signer_cache>> v(pool_threads());
          for (auto& c : v) c = std::make_unique<protocol::dkim::signer_cache>();
          return v;
      }()),
      _pool(static_cast<unsigned>(_caches.size()),
            std::max<std::size_t>(config.max_connections == 0 ? 65536 : config.max_connections, 1024),
            signatures_gathered) {}

std::expected<std::string, std::string> dkim_signer::reload() { return reload(_config); }

std::expected<std::string, std::string> dkim_signer::reload(const core::config& config) {
    auto keys = dkim_keys::load(config);
    if (!keys) return std::unexpected(keys.error());
    std::string text = (*keys)->describe();
    _keys.store(std::move(*keys));
    return text;
}

void dkim_job::prepare(std::shared_ptr<const dkim_keys> table, std::vector<const dkim_key*> keys,
                       std::vector<dkim::header_field> fields, const dkim::sha256_digest& body_hash,
                       std::int64_t now_s) {
    clear();
    _table = std::move(table);
    _keys = std::move(keys);
    _fields = std::move(fields);
    _body_hash = body_hash;
    _now_s = now_s;
}

void dkim_job::clear() noexcept {
    _table.reset();
    _keys.clear();
    _fields.clear();
    _signature_fields.clear();
    _summaries.clear();
    _errors.clear();
}

void dkim_job::run(unsigned worker) noexcept { sign_with(_signer != nullptr ? &_signer->cache(worker) : nullptr); }

bool dkim_job::ed25519_only() const noexcept {
    for (const dkim_key* k : _keys)
        if (k->key.alg != dkim::algorithm::ed25519_sha256) return false;
    return !_keys.empty();
}

void dkim_job::sign_with(dkim::signer_cache* cache) noexcept {
    try {
        const std::vector<std::string_view> h =
            dkim::header_list(_fields, _table->header_names(), _table->oversigned());
        for (const dkim_key* k : _keys) {
            dkim::signature_request request;
            request.domain = k->domain;
            request.selector = k->selector;
            request.canon = _table->canon();
            request.headers = h;
            request.timestamp = _now_s;
            if (const auto x = _table->expiration_s()) request.expiration = _now_s + *x;
            request.body_hash = _body_hash;
            auto field = dkim::sign(k->key, request, _fields, cache);
            if (!field) {
                _errors.push_back(dkim::summary(k->key.alg, k->domain, k->selector) + ": " +
                                  std::string(dkim::describe(field.error())));
                continue;
            }
            _signature_fields += *field;
            _summaries.push_back(dkim::summary(k->key.alg, k->domain, k->selector));
        }
    } catch (const std::exception& e) {  // allocation: the message goes unsigned, and says why
        _signature_fields.clear();
        _summaries.clear();
        _errors.emplace_back(e.what());
    }
}

void dkim_job::finish() noexcept { _done(_owner, *this); }

dkim_plan plan_signatures(const dkim_keys& table, std::string_view message) {
    dkim_plan plan;
    if (table.empty()) return plan;
    plan.fields = dkim::split_header_fields(message);
    const std::optional<std::string> author = dkim::author_domain(plan.fields);
    table.select(author ? std::string_view(*author) : std::string_view(), plan.keys);
    return plan;
}

}  // namespace ringrelay::queue
