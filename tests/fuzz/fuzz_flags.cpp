// tests/fuzz/fuzz_flags.cpp -- libFuzzer harness: the command line and CSERVE_* environment
// SPDX-License-Identifier: BSL-1.0
//
// The input is NUL-separated words. A word of the form NAME=VALUE whose NAME is one of the
// variables run() reads (CSERVE_<FLAG>, WEB_CONCURRENCY, FORWARDED_ALLOW_IPS) is put in the
// environment; every other word is an argument. parse_command_line() must either succeed or
// throw usage_error with a one-line message naming the problem; anything else (another
// exception, a crash, a hang) is a finding.
#include <cserve/run.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace {

bool
read_by_run(std::string_view name)
{
    return name.starts_with("CSERVE_") || name == "WEB_CONCURRENCY" || name == "FORWARDED_ALLOW_IPS";
}

} // namespace

extern "C" int
LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    std::string_view in(reinterpret_cast<char const*>(data), size);
    std::vector<std::string> args{"cserve"};
    std::vector<std::string> env;
    // putenv, not setenv: glibc's setenv keeps every "NAME=value" string it ever made, so
    // millions of runs with new values grow without bound (an out-of-memory after 21 million
    // executions). putenv takes these strings, which stay put (a deque does not move them)
    // until unsetenv takes them out again.
    std::deque<std::string> entries;
    while (!in.empty()) {
        auto end = in.find('\0');
        auto word = in.substr(0, end);
        in.remove_prefix(end == std::string_view::npos ? in.size() : end + 1);
        auto eq = word.find('=');
        if (eq != std::string_view::npos && eq > 0 && read_by_run(word.substr(0, eq))) {
            entries.emplace_back(word);
            ::putenv(entries.back().data());
            env.emplace_back(word.substr(0, eq));
        } else {
            args.emplace_back(word);
        }
    }
    std::vector<char const*> argv;
    for (auto const& a : args)
        argv.push_back(a.c_str());
    try {
        auto cl = cserve::parse_command_line(static_cast<int>(argv.size()), argv.data());
        // What a parsed config promises.
        if (cl.cfg.ssl_cert_reqs < cserve::cert_reqs::none || cl.cfg.ssl_cert_reqs > cserve::cert_reqs::required)
            std::abort();
        if (cl.cfg.workers && *cl.cfg.workers == 0)
            std::abort();
    } catch (cserve::usage_error const& e) {
        std::string_view what = e.what();
        if (what.empty() || what.find('\n') != std::string_view::npos) {
            std::fprintf(stderr, "usage_error not one line: '%s'\n", e.what());
            std::abort();
        }
    }
    for (auto const& name : env)
        ::unsetenv(name.c_str());
    return 0;
}
