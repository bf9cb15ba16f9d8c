// tools/ringrelay_passwd.cc: ringrelay-passwd, which makes the lines of the SMTP AUTH users
// file (--auth-users, core/auth_users.h):
//   ringrelay-passwd USER            asks for the password twice on a terminal (no echo), or
//                                    reads one line from stdin otherwise; prints USER:HASH
//   ringrelay-passwd --check USER HASH   reads a password the same way; exit 0 if it matches
// --cost LN sets scrypt's N = 2^LN (default 15; 10..22). Exit 0 on success, 1 on a mismatch
// or failure, 2 on a usage error.
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "core/auth_users.h"
#include "core/password_hash.h"

using namespace ringrelay;

namespace {

// One line from stdin without its line end; with echo off when stdin is a terminal.
bool read_password(const char* prompt, std::string& out) {
    const bool tty = isatty(STDIN_FILENO) != 0;
    termios saved{};
    if (tty) {
        std::fprintf(stderr, "%s", prompt);
        std::fflush(stderr);
        tcgetattr(STDIN_FILENO, &saved);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    const bool ok = static_cast<bool>(std::getline(std::cin, out));
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        std::fprintf(stderr, "\n");
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ringrelay-passwd: makes a line of the SMTP AUTH users file (--auth-users): USER:HASH, the "
                 "hash being scrypt in PHC form. The password is asked twice on a terminal, or read as one "
                 "line from stdin."};
    std::string user;
    std::string check_hash;
    unsigned cost = 15;
    app.add_option("USER", user, "the user name (1-255 octets, no spaces, controls or ':')")->required();
    app.add_option("--check", check_hash, "HASH: check a password against this hash instead (exit 0 if it matches)");
    app.add_option("--cost", cost, "scrypt cost: N = 2^COST (default 15, 10..22)")->check(CLI::Range(10, 22));
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }
    if (!core::valid_user_name(user)) {
        std::fprintf(stderr, "ringrelay-passwd: bad user name (1-255 octets, no spaces, controls or ':')\n");
        return 2;
    }
    std::string password;
    if (!read_password("Password: ", password) || password.empty()) {
        std::fprintf(stderr, "ringrelay-passwd: no password given\n");
        return 1;
    }
    if (!check_hash.empty()) {
        auto m = core::verify_password(password, check_hash);
        if (!m) {
            std::fprintf(stderr, "ringrelay-passwd: %s\n", m.error().c_str());
            return 1;
        }
        std::fprintf(stderr, "%s\n", *m == core::password_match::yes ? "match" : "no match");
        return *m == core::password_match::yes ? 0 : 1;
    }
    if (isatty(STDIN_FILENO) != 0) {
        std::string again;
        if (!read_password("Again: ", again) || again != password) {
            std::fprintf(stderr, "ringrelay-passwd: the passwords differ\n");
            return 1;
        }
    }
    auto hash = core::hash_password(password, core::scrypt_params{static_cast<std::uint8_t>(cost), 8, 1});
    if (!hash) {
        std::fprintf(stderr, "ringrelay-passwd: %s\n", hash.error().c_str());
        return 1;
    }
    std::printf("%s:%s\n", user.c_str(), hash->c_str());
    return 0;
}
