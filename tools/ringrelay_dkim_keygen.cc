// tools/ringrelay_dkim_keygen.cc: ringrelay-dkim-keygen, which makes a DKIM signing key and the
// DNS record that publishes it:
//   ringrelay-dkim-keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits N] [--out FILE]
// writes the private key as PEM (PKCS#8) to FILE (default SELECTOR.DOMAIN.pem in the current
// directory), mode 0600, never over an existing file, and prints the TXT record, zone-file style,
// as the only thing on standard output:
//   SELECTOR._domainkey.DOMAIN IN TXT "v=DKIM1; k=rsa; p=..."
// A record longer than 255 octets is printed as several quoted strings on that line (one TXT
// character-string holds at most 255 octets, RFC 1035 §3.3.14; resolvers join them, RFC 6376
// §3.6.2.2). RSA keys are 2048 bits unless --bits says otherwise (1024..8192; RFC 8301 §3.2:
// at least 1024, 2048 recommended). Exit 0 on success, 1 on a failure (the file exists, cannot
// be written), 2 on a usage error.
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <CLI/CLI.hpp>

#include "protocol/dkim_sign.h"

using namespace ringrelay;

namespace {

// The key as PKCS#8 PEM, or nothing.
std::string to_pem(EVP_PKEY* key) {
    BIO* bio = BIO_new(BIO_s_mem());
    if (bio == nullptr) return {};
    std::string pem;
    if (PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1) {
        char* data = nullptr;
        const long size = BIO_get_mem_data(bio, &data);
        if (size > 0) pem.assign(data, static_cast<std::size_t>(size));
    }
    BIO_free(bio);
    return pem;
}

// Creates `path` (0600, failing if it exists) with `text`, synced. An error message or "".
std::string write_new_file(const std::string& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST) return path + ": exists; not overwritten (remove it first, or choose --out)";
        return path + ": " + std::strerror(errno);
    }
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const std::string error = path + ": write: " + std::strerror(errno);
            ::close(fd);
            ::unlink(path.c_str());
            return error;
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0) {
        const std::string error = path + ": " + std::strerror(errno);
        ::close(fd);
        ::unlink(path.c_str());
        return error;
    }
    ::close(fd);
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringrelay-dkim-keygen: makes a DKIM signing key (PEM, mode 0600) and prints the DNS "
                 "TXT record to publish, as the only thing on standard output."};
    std::string domain;
    std::string selector;
    std::string type = "rsa";
    unsigned bits = 2048;
    std::string out;
    app.add_option("DOMAIN", domain, "the signing domain (d=)")->required();
    app.add_option("SELECTOR", selector, "the selector (s=): the key is published at SELECTOR._domainkey.DOMAIN")
        ->required();
    app.add_option("--type", type, "rsa (rsa-sha256) or ed25519 (ed25519-sha256, RFC 8463); default rsa")
        ->check(CLI::IsMember({"rsa", "ed25519"}));
    auto* bits_option =
        app.add_option("--bits", bits, "RSA modulus bits (default 2048, 1024..8192)")->check(CLI::Range(1024, 8192));
    app.add_option("--out", out, "the key file (default SELECTOR.DOMAIN.pem in the current directory)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (!protocol::dkim::valid_tag_text(domain) || !protocol::dkim::valid_tag_text(selector)) {
        std::fprintf(stderr,
                     "ringrelay-dkim-keygen: the domain and the selector are dot-separated labels of letters, digits, "
                     "'-' and '_' (an internationalized domain in its xn-- form)\n");
        return 2;
    }
    if (type == "ed25519" && bits_option->count() > 0) {
        std::fprintf(stderr, "ringrelay-dkim-keygen: --bits is for RSA keys; an Ed25519 key has no size to choose\n");
        return 2;
    }
    if (out.empty()) out = selector + "." + domain + ".pem";

    EVP_PKEY* key = type == "rsa" ? EVP_RSA_gen(bits) : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
    if (key == nullptr) {
        std::fprintf(stderr, "ringrelay-dkim-keygen: OpenSSL could not generate the key\n");
        return 1;
    }
    const std::string pem = to_pem(key);
    EVP_PKEY_free(key);
    // Read back with the relay's own loader: what is written is what --dkim-key will accept.
    const auto parsed = protocol::dkim::parse_private_key(pem);
    if (pem.empty() || !parsed) {
        std::fprintf(stderr, "ringrelay-dkim-keygen: the generated key does not load: %s\n",
                     parsed ? "empty PEM" : std::string(protocol::dkim::describe(parsed.error())).c_str());
        return 1;
    }
    const auto record = protocol::dkim::dns_txt_record(*parsed);
    if (!record) {
        std::fprintf(stderr, "ringrelay-dkim-keygen: OpenSSL could not export the public key\n");
        return 1;
    }
    if (const std::string error = write_new_file(out, pem); !error.empty()) {
        std::fprintf(stderr, "ringrelay-dkim-keygen: %s\n", error.c_str());
        return 1;
    }
    std::string line = selector + "._domainkey." + domain + " IN TXT";
    for (std::size_t at = 0; at < record->size(); at += 255) line += " \"" + record->substr(at, 255) + "\"";
    std::printf("%s\n", line.c_str());
    std::fprintf(stderr, "ringrelay-dkim-keygen: wrote %s (%s, %u bits); publish the record above\n", out.c_str(),
                 std::string(protocol::dkim::algorithm_name(parsed->alg)).c_str(), parsed->bits);
    return 0;
}
