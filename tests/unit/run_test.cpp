// tests/unit/run_test.cpp -- command-line flags and the --help text
// SPDX-License-Identifier: BSL-1.0
#include <cserve/run.hpp>

#include "catch.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

using namespace std::chrono_literals;

// Parses `args` as if they followed the program name.
cserve::command_line
parse(std::initializer_list<char const*> args, cserve::config defaults = {})
{
    std::vector<char const*> argv{"prog"};
    argv.insert(argv.end(), args.begin(), args.end());
    return cserve::parse_command_line(static_cast<int>(argv.size()), argv.data(), std::move(defaults));
}

// The message of the usage_error that parsing `args` throws ("" when none is thrown).
std::string
usage_error_of(std::initializer_list<char const*> args)
{
    try {
        (void)parse(args);
    } catch (cserve::usage_error const& e) {
        return e.what();
    }
    return {};
}

// What `f` writes to stderr (file descriptor 2), and what it returns.
template <class F>
std::pair<int, std::string>
with_stderr(F f)
{
    std::FILE* tmp = std::tmpfile();
    REQUIRE(tmp);
    std::fflush(stderr);
    int saved = ::dup(2);
    ::dup2(::fileno(tmp), 2);
    int status = f();
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::rewind(tmp);
    std::string text;
    char buf[512];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, tmp)) > 0;)
        text.append(buf, n);
    std::fclose(tmp);
    return {status, text};
}

} // namespace

TEST_CASE("run: no flags give the config defaults", "[run][flags][defaults]")
{
    auto cl = parse({});
    cserve::config const d;
    CHECK_FALSE(cl.help);
    CHECK(cl.cfg.host == "127.0.0.1");
    CHECK(cl.cfg.port == 8000);
    CHECK(cl.cfg.backlog == 2048);
    CHECK(cl.cfg.log_level == cserve::log_level::info);
    CHECK(cl.cfg.access_log);
    CHECK(cl.cfg.root_path.empty());
    CHECK(cl.cfg.timeout_keep_alive == 5s);
    CHECK_FALSE(cl.cfg.timeout_graceful_shutdown);
    CHECK(cl.cfg.timeout_request_header == 30s);
    CHECK(cl.cfg.max_header_bytes == 16 * 1024);
    CHECK(cl.cfg.server_header);
    CHECK(cl.cfg.date_header);
    CHECK(cl.cfg.headers.empty());
    CHECK(cl.cfg.host == d.host);
    CHECK(cl.cfg.port == d.port);
}

TEST_CASE("run: flags set the matching config fields", "[run][flags]")
{
    SECTION("--port with a separate value and with =")
    {
        CHECK(parse({"--port", "0"}).cfg.port == 0);
        CHECK(parse({"--port=8080"}).cfg.port == 8080);
        CHECK(parse({"--port", "65535"}).cfg.port == 65535);
    }
    SECTION("--host")
    {
        CHECK(parse({"--host", "::"}).cfg.host == "::");
        CHECK(parse({"--host=0.0.0.0"}).cfg.host == "0.0.0.0");
    }
    SECTION("timeouts are seconds, fractions allowed")
    {
        CHECK(parse({"--timeout-keep-alive", "1.5"}).cfg.timeout_keep_alive == 1500ms);
        auto g = parse({"--timeout-graceful-shutdown", "2"}).cfg.timeout_graceful_shutdown;
        REQUIRE(g);
        CHECK(*g == 2000ms);
        CHECK(parse({"--timeout-request-header=0.25"}).cfg.timeout_request_header == 250ms);
    }
    SECTION("--log-level, any case")
    {
        CHECK(parse({"--log-level", "debug"}).cfg.log_level == cserve::log_level::debug);
        CHECK(parse({"--log-level=WARNING"}).cfg.log_level == cserve::log_level::warning);
        CHECK(parse({"--log-level", "trace"}).cfg.log_level == cserve::log_level::trace);
    }
    SECTION("switches")
    {
        auto cl = parse({"--no-access-log", "--no-server-header", "--no-date-header"});
        CHECK_FALSE(cl.cfg.access_log);
        CHECK_FALSE(cl.cfg.server_header);
        CHECK_FALSE(cl.cfg.date_header);
        auto back = parse({"--no-access-log", "--access-log", "--no-server-header", "--server-header",
                           "--no-date-header", "--date-header"});
        CHECK(back.cfg.access_log);
        CHECK(back.cfg.server_header);
        CHECK(back.cfg.date_header);
    }
    SECTION("--header is repeatable and keeps the order")
    {
        auto cl = parse({"--header", "x-a:b", "--header=x-c: d"});
        REQUIRE(cl.cfg.headers.size() == 2);
        CHECK(cl.cfg.headers[0] == cserve::header{"x-a", "b"});
        CHECK(cl.cfg.headers[1] == cserve::header{"x-c", "d"});
    }
    SECTION("--root-path, --backlog, --max-header-bytes")
    {
        auto cl = parse({"--root-path", "/api", "--backlog", "10", "--max-header-bytes", "4096"});
        CHECK(cl.cfg.root_path == "/api");
        CHECK(cl.cfg.backlog == 10);
        CHECK(cl.cfg.max_header_bytes == 4096);
    }
    SECTION("--help sets help")
    {
        CHECK(parse({"--help"}).help);
        CHECK(parse({"--port", "1", "--help"}).help);
    }
    SECTION("the last of a repeated flag wins")
    {
        CHECK(parse({"--port", "1", "--port", "2"}).cfg.port == 2);
    }
}

TEST_CASE("run: parsing starts from the defaults it is given", "[run][flags][defaults-argument]")
{
    cserve::config d;
    d.port = 1234;
    d.host = "10.0.0.1";
    d.headers.push_back({"x-default", "1"});
    auto cl = parse({"--port", "99"}, d);
    CHECK(cl.cfg.port == 99);
    CHECK(cl.cfg.host == "10.0.0.1");
    REQUIRE(cl.cfg.headers.size() == 1);
    CHECK(cl.cfg.headers[0].first == "x-default");
}

TEST_CASE("run: bad flags throw usage_error naming the flag", "[run][flags][errors]")
{
    SECTION("unknown flag")
    {
        CHECK_THROWS_AS(parse({"--bogus"}), cserve::usage_error);
        CHECK(usage_error_of({"--bogus"}).find("--bogus") != std::string::npos);
    }
    SECTION("port out of range")
    {
        CHECK_THROWS_AS(parse({"--port", "70000"}), cserve::usage_error);
        CHECK(usage_error_of({"--port", "70000"}).find("--port") != std::string::npos);
        CHECK(usage_error_of({"--port", "-1"}).find("--port") != std::string::npos);
    }
    SECTION("port not a number")
    {
        CHECK(usage_error_of({"--port", "abc"}).find("--port") != std::string::npos);
        CHECK(usage_error_of({"--port", "80x"}).find("--port") != std::string::npos);
        CHECK(usage_error_of({"--port="}).find("--port") != std::string::npos);
    }
    SECTION("unknown log level")
    {
        CHECK(usage_error_of({"--log-level", "loud"}).find("--log-level") != std::string::npos);
    }
    SECTION("header without a colon or with a bad name")
    {
        CHECK(usage_error_of({"--header", "novalue"}).find("--header") != std::string::npos);
        CHECK(usage_error_of({"--header", "bad name:v"}).find("--header") != std::string::npos);
        CHECK(usage_error_of({"--header", ":v"}).find("--header") != std::string::npos);
    }
    SECTION("missing value at the end")
    {
        CHECK(usage_error_of({"--port"}).find("--port") != std::string::npos);
        CHECK(usage_error_of({"--host"}).find("--host") != std::string::npos);
    }
    SECTION("bad seconds")
    {
        CHECK(usage_error_of({"--timeout-keep-alive", "soon"}).find("--timeout-keep-alive") != std::string::npos);
        CHECK(usage_error_of({"--timeout-keep-alive", "-1"}).find("--timeout-keep-alive") != std::string::npos);
        CHECK(usage_error_of({"--timeout-graceful-shutdown", "nan"}).find("--timeout-graceful-shutdown") !=
              std::string::npos);
    }
    SECTION("a value given to a switch")
    {
        CHECK(usage_error_of({"--no-access-log=1"}).find("--no-access-log") != std::string::npos);
    }
    SECTION("backlog out of range")
    {
        CHECK(usage_error_of({"--backlog", "0"}).find("--backlog") != std::string::npos);
    }
}

TEST_CASE("run: a usage error is one line whatever the flag or value holds", "[run][flags][errors]")
{
    // Found by tests/fuzz/fuzz_flags: a newline in an unknown flag split the error in two.
    CHECK(usage_error_of({"--ss\n"}) == "No such option: --ss\\n");
    CHECK(usage_error_of({"--port", "1\r\n2"}) == "Invalid value for '--port': '1\\r\\n2' is not a valid integer.");
    CHECK(usage_error_of({"--no-access-log=\x1b[2J"}) == "Option '--no-access-log' does not take a value.");
    CHECK(usage_error_of({"--x\x1b[31m"}) == "No such option: --x\\x1b[31m");
    CHECK(usage_error_of({"--log-level", "\tdebug"}).find('\t') == std::string::npos);
}

TEST_CASE("run: usage() names the program and lists every flag", "[run][usage]")
{
    auto text = cserve::usage("prog");
    CHECK(text.starts_with("Usage: prog"));
    for (char const* flag :
         {"--host", "--port", "--backlog", "--log-level", "--access-log", "--no-access-log", "--root-path",
          "--timeout-keep-alive", "--timeout-graceful-shutdown", "--timeout-request-header", "--max-header-bytes",
          "--server-header", "--no-server-header", "--date-header", "--no-date-header", "--header", "--help"}) {
        INFO(flag);
        CHECK(text.find(flag) != std::string::npos);
    }
    CHECK(text.find("[default: 8000]") != std::string::npos);
}

//------------------------------------------------------------------------------
// Listening, proxy, limit, lifespan and WebSocket flags

TEST_CASE("run: the listening flags set uds, uds_mode and fd", "[run][flags][listen]")
{
    SECTION("defaults")
    {
        auto cl = parse({});
        CHECK(cl.cfg.uds.empty());
        CHECK(cl.cfg.uds_mode == 0666u);
        CHECK(cl.cfg.fd == -1);
    }
    SECTION("--uds")
    {
        CHECK(parse({"--uds", "/tmp/cserve.sock"}).cfg.uds == "/tmp/cserve.sock");
        CHECK(parse({"--uds=/run/app.sock"}).cfg.uds == "/run/app.sock");
    }
    SECTION("--uds-mode is octal")
    {
        CHECK(parse({"--uds-mode", "600"}).cfg.uds_mode == 0600u);
        CHECK(parse({"--uds-mode=0660"}).cfg.uds_mode == 0660u);
        CHECK(parse({"--uds-mode", "777"}).cfg.uds_mode == 0777u);
        CHECK(parse({"--uds-mode", "0"}).cfg.uds_mode == 0u);
    }
    SECTION("--fd")
    {
        CHECK(parse({"--fd", "5"}).cfg.fd == 5);
        CHECK(parse({"--fd=0"}).cfg.fd == 0);
    }
}

TEST_CASE("run: bad listening flag values throw usage_error naming the flag", "[run][flags][listen][errors]")
{
    CHECK(usage_error_of({"--uds-mode", "999"}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--uds-mode", "8"}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--uds-mode", "rw"}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--uds-mode", "-600"}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--uds-mode="}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--uds-mode", "17777"}).find("--uds-mode") != std::string::npos);
    CHECK(usage_error_of({"--fd", "-1"}).find("--fd") != std::string::npos);
    CHECK(usage_error_of({"--fd", "three"}).find("--fd") != std::string::npos);
    CHECK(usage_error_of({"--uds"}).find("--uds") != std::string::npos);
}

TEST_CASE("run: the proxy flags set proxy_headers and forwarded_allow_ips", "[run][flags][proxy]")
{
    SECTION("defaults")
    {
        auto cl = parse({});
        CHECK(cl.cfg.proxy_headers);
        CHECK(cl.cfg.forwarded_allow_ips == "127.0.0.1");
    }
    SECTION("--no-proxy-headers and back")
    {
        CHECK_FALSE(parse({"--no-proxy-headers"}).cfg.proxy_headers);
        CHECK(parse({"--no-proxy-headers", "--proxy-headers"}).cfg.proxy_headers);
    }
    SECTION("--forwarded-allow-ips keeps the list as given")
    {
        CHECK(parse({"--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1"}).cfg.forwarded_allow_ips ==
              "10.0.0.0/8,127.0.0.1");
        CHECK(parse({"--forwarded-allow-ips=*"}).cfg.forwarded_allow_ips == "*");
        CHECK(parse({"--forwarded-allow-ips", "fd00::/8, ::1"}).cfg.forwarded_allow_ips == "fd00::/8, ::1");
    }
    SECTION("a bad list is a usage_error naming the flag")
    {
        CHECK_THROWS_AS(parse({"--forwarded-allow-ips", "bogus"}), cserve::usage_error);
        CHECK(usage_error_of({"--forwarded-allow-ips", "bogus"}).find("--forwarded-allow-ips") != std::string::npos);
        CHECK(usage_error_of({"--forwarded-allow-ips", "127.0.0.1,10.0.0.0/99"}).find("--forwarded-allow-ips") !=
              std::string::npos);
    }
}

TEST_CASE("run: the limit flags set limit_concurrency, limit_max_requests and the jitter", "[run][flags][limits]")
{
    SECTION("defaults: no limits")
    {
        auto cl = parse({});
        CHECK_FALSE(cl.cfg.limit_concurrency);
        CHECK_FALSE(cl.cfg.limit_max_requests);
        CHECK(cl.cfg.limit_max_requests_jitter == 0u);
    }
    SECTION("values")
    {
        auto cl = parse({"--limit-concurrency", "10", "--limit-max-requests", "100", "--limit-max-requests-jitter", "5"});
        REQUIRE(cl.cfg.limit_concurrency);
        CHECK(*cl.cfg.limit_concurrency == 10u);
        REQUIRE(cl.cfg.limit_max_requests);
        CHECK(*cl.cfg.limit_max_requests == 100u);
        CHECK(cl.cfg.limit_max_requests_jitter == 5u);
    }
    SECTION("bad values")
    {
        CHECK(usage_error_of({"--limit-concurrency", "0"}).find("--limit-concurrency") != std::string::npos);
        CHECK(usage_error_of({"--limit-concurrency", "-3"}).find("--limit-concurrency") != std::string::npos);
        CHECK(usage_error_of({"--limit-max-requests", "0"}).find("--limit-max-requests") != std::string::npos);
        CHECK(usage_error_of({"--limit-max-requests", "many"}).find("--limit-max-requests") != std::string::npos);
        CHECK(usage_error_of({"--limit-max-requests-jitter", "-1"}).find("--limit-max-requests-jitter") !=
              std::string::npos);
    }
}

TEST_CASE("run: --lifespan takes auto, on or off", "[run][flags][lifespan]")
{
    CHECK(parse({}).cfg.lifespan == cserve::lifespan_mode::automatic);
    CHECK(parse({"--lifespan", "on"}).cfg.lifespan == cserve::lifespan_mode::on);
    CHECK(parse({"--lifespan", "off"}).cfg.lifespan == cserve::lifespan_mode::off);
    CHECK(parse({"--lifespan", "off", "--lifespan=auto"}).cfg.lifespan == cserve::lifespan_mode::automatic);
    CHECK_THROWS_AS(parse({"--lifespan", "bad"}), cserve::usage_error);
    CHECK(usage_error_of({"--lifespan", "bad"}).find("--lifespan") != std::string::npos);
}

TEST_CASE("run: the WebSocket flags set the ws_ fields", "[run][flags][ws]")
{
    SECTION("defaults")
    {
        auto cl = parse({});
        CHECK(cl.cfg.ws);
        CHECK(cl.cfg.ws_max_size == 16u * 1024 * 1024);
        CHECK(cl.cfg.ws_max_queue == 32u);
        REQUIRE(cl.cfg.ws_ping_interval);
        CHECK(*cl.cfg.ws_ping_interval == 20s);
        REQUIRE(cl.cfg.ws_ping_timeout);
        CHECK(*cl.cfg.ws_ping_timeout == 20s);
        CHECK(cl.cfg.ws_per_message_deflate);
    }
    SECTION("--ws none and auto; a bad value")
    {
        CHECK_FALSE(parse({"--ws", "none"}).cfg.ws);
        CHECK(parse({"--ws", "none", "--ws=auto"}).cfg.ws);
        CHECK(usage_error_of({"--ws", "bad"}).find("--ws") != std::string::npos);
    }
    SECTION("--ws-max-size and --ws-max-queue")
    {
        auto cl = parse({"--ws-max-size", "1024", "--ws-max-queue", "4"});
        CHECK(cl.cfg.ws_max_size == 1024u);
        CHECK(cl.cfg.ws_max_queue == 4u);
        CHECK(usage_error_of({"--ws-max-size", "0"}).find("--ws-max-size") != std::string::npos);
        CHECK(usage_error_of({"--ws-max-queue", "x"}).find("--ws-max-queue") != std::string::npos);
    }
    SECTION("ping interval and timeout are seconds; 0 means none")
    {
        CHECK_FALSE(parse({"--ws-ping-interval", "0"}).cfg.ws_ping_interval);
        CHECK_FALSE(parse({"--ws-ping-timeout", "0"}).cfg.ws_ping_timeout);
        auto t = parse({"--ws-ping-timeout", "2.5"}).cfg.ws_ping_timeout;
        REQUIRE(t);
        CHECK(*t == 2500ms);
        auto i = parse({"--ws-ping-interval=0.25"}).cfg.ws_ping_interval;
        REQUIRE(i);
        CHECK(*i == 250ms);
        CHECK(usage_error_of({"--ws-ping-interval", "soon"}).find("--ws-ping-interval") != std::string::npos);
        CHECK(usage_error_of({"--ws-ping-timeout", "-1"}).find("--ws-ping-timeout") != std::string::npos);
    }
    SECTION("--ws-per-message-deflate takes a boolean")
    {
        CHECK_FALSE(parse({"--ws-per-message-deflate", "false"}).cfg.ws_per_message_deflate);
        CHECK_FALSE(parse({"--ws-per-message-deflate=False"}).cfg.ws_per_message_deflate);
        CHECK_FALSE(parse({"--ws-per-message-deflate", "0"}).cfg.ws_per_message_deflate);
        CHECK(parse({"--ws-per-message-deflate", "false", "--ws-per-message-deflate", "true"}).cfg.ws_per_message_deflate);
        CHECK(parse({"--ws-per-message-deflate", "1"}).cfg.ws_per_message_deflate);
        CHECK(usage_error_of({"--ws-per-message-deflate", "bad"}).find("--ws-per-message-deflate") !=
              std::string::npos);
        // A boolean flag needs its value.
        CHECK(usage_error_of({"--ws-per-message-deflate"}).find("--ws-per-message-deflate") != std::string::npos);
    }
}

TEST_CASE("run: usage() lists the listening, proxy, limit, lifespan and WebSocket flags", "[run][usage][new-flags]")
{
    auto text = cserve::usage("prog");
    for (char const* flag :
         {"--uds", "--uds-mode", "--fd", "--proxy-headers", "--no-proxy-headers", "--forwarded-allow-ips",
          "--limit-concurrency", "--limit-max-requests", "--limit-max-requests-jitter", "--lifespan", "--ws",
          "--ws-max-size", "--ws-max-queue", "--ws-ping-interval", "--ws-ping-timeout", "--ws-per-message-deflate"}) {
        INFO(flag);
        CHECK(text.find(flag) != std::string::npos);
    }
}

//------------------------------------------------------------------------------
// The environment

namespace {

// Sets an environment variable for the scope of the object; puts back what was there.
class env_guard {
public:
    env_guard(char const* name, char const* value)
        : name_(name)
    {
        if (char const* old = std::getenv(name))
            old_ = old;
        ::setenv(name, value, 1);
    }

    ~env_guard()
    {
        if (old_)
            ::setenv(name_.c_str(), old_->c_str(), 1);
        else
            ::unsetenv(name_.c_str());
    }

    env_guard(env_guard const&) = delete;
    env_guard& operator=(env_guard const&) = delete;

private:
    std::string name_;
    std::optional<std::string> old_;
};

} // namespace

TEST_CASE("run: CSERVE_<FLAG> variables set values below the command line", "[run][environment][values]")
{
    SECTION("CSERVE_PORT sets the port")
    {
        env_guard port("CSERVE_PORT", "9001");
        CHECK(parse({}).cfg.port == 9001);
    }
    SECTION("the command line wins over the environment")
    {
        env_guard port("CSERVE_PORT", "9001");
        CHECK(parse({"--port", "9002"}).cfg.port == 9002);
        CHECK(parse({"--port=9003"}).cfg.port == 9003);
    }
    SECTION("the environment wins over the defaults argument")
    {
        env_guard port("CSERVE_PORT", "9001");
        cserve::config d;
        d.port = 1234;
        CHECK(parse({}, d).cfg.port == 9001);
    }
    SECTION("names with dashes use underscores")
    {
        env_guard root("CSERVE_ROOT_PATH", "/api");
        env_guard keep("CSERVE_TIMEOUT_KEEP_ALIVE", "1.5");
        env_guard limit("CSERVE_LIMIT_MAX_REQUESTS", "7");
        env_guard uds("CSERVE_UDS", "/tmp/x.sock");
        auto cl = parse({});
        CHECK(cl.cfg.root_path == "/api");
        CHECK(cl.cfg.timeout_keep_alive == 1500ms);
        REQUIRE(cl.cfg.limit_max_requests);
        CHECK(*cl.cfg.limit_max_requests == 7u);
        CHECK(cl.cfg.uds == "/tmp/x.sock");
    }
    SECTION("a bad value is a usage_error naming the variable")
    {
        env_guard port("CSERVE_PORT", "abc");
        CHECK_THROWS_AS(parse({}), cserve::usage_error);
        CHECK(usage_error_of({}).find("CSERVE_PORT") != std::string::npos);
    }
}

TEST_CASE("run: CSERVE_<SWITCH>=true|false sets a switch", "[run][environment][switches]")
{
    SECTION("CSERVE_ACCESS_LOG=false")
    {
        env_guard access("CSERVE_ACCESS_LOG", "false");
        CHECK_FALSE(parse({}).cfg.access_log);
        // The command line still wins.
        CHECK(parse({"--access-log"}).cfg.access_log);
    }
    SECTION("true, 0, 1 and any case")
    {
        {
            env_guard server("CSERVE_SERVER_HEADER", "FALSE");
            CHECK_FALSE(parse({}).cfg.server_header);
        }
        {
            env_guard server("CSERVE_SERVER_HEADER", "0");
            CHECK_FALSE(parse({}).cfg.server_header);
        }
        {
            env_guard proxy("CSERVE_PROXY_HEADERS", "false");
            CHECK_FALSE(parse({}).cfg.proxy_headers);
        }
        cserve::config d;
        d.date_header = false;
        {
            env_guard date("CSERVE_DATE_HEADER", "True");
            CHECK(parse({}, d).cfg.date_header);
        }
        {
            env_guard date("CSERVE_DATE_HEADER", "1");
            CHECK(parse({}, d).cfg.date_header);
        }
    }
    SECTION("CSERVE_ACCESS_LOG=maybe is a usage_error naming the variable")
    {
        env_guard access("CSERVE_ACCESS_LOG", "maybe");
        CHECK_THROWS_AS(parse({}), cserve::usage_error);
        CHECK(usage_error_of({}).find("CSERVE_ACCESS_LOG") != std::string::npos);
    }
}

TEST_CASE("run: FORWARDED_ALLOW_IPS sets the default of --forwarded-allow-ips", "[run][environment][forwarded]")
{
    SECTION("'*'")
    {
        env_guard ips("FORWARDED_ALLOW_IPS", "*");
        CHECK(parse({}).cfg.forwarded_allow_ips == "*");
    }
    SECTION("a list, overridden by the flag")
    {
        env_guard ips("FORWARDED_ALLOW_IPS", "10.0.0.0/8");
        CHECK(parse({}).cfg.forwarded_allow_ips == "10.0.0.0/8");
        CHECK(parse({"--forwarded-allow-ips", "127.0.0.1"}).cfg.forwarded_allow_ips == "127.0.0.1");
    }
    SECTION("a bad list is a usage_error naming the variable")
    {
        env_guard ips("FORWARDED_ALLOW_IPS", "bogus");
        CHECK(usage_error_of({}).find("FORWARDED_ALLOW_IPS") != std::string::npos);
    }
}

TEST_CASE("run: the environment variables the tests set are gone afterwards", "[run][environment][cleanup]")
{
    {
        env_guard port("CSERVE_PORT", "9001");
        env_guard access("CSERVE_ACCESS_LOG", "false");
        env_guard ips("FORWARDED_ALLOW_IPS", "*");
    }
    auto cl = parse({});
    CHECK(cl.cfg.port == 8000);
    CHECK(cl.cfg.access_log);
    CHECK(cl.cfg.forwarded_allow_ips == "127.0.0.1");
}

TEST_CASE("run: the worker flags set workers, timeout_worker_healthcheck and log_file", "[run][flags][workers]")
{
    SECTION("defaults: workers unset, a 5 s healthcheck, no log file")
    {
        auto cl = parse({});
        CHECK_FALSE(cl.cfg.workers);
        CHECK(cl.cfg.timeout_worker_healthcheck == 5s);
        CHECK(cl.cfg.log_file.empty());
    }
    SECTION("values")
    {
        auto cl = parse({"--workers", "4", "--timeout-worker-healthcheck", "2.5", "--log-file", "/var/log/app.log"});
        REQUIRE(cl.cfg.workers);
        CHECK(*cl.cfg.workers == 4u);
        CHECK(cl.cfg.timeout_worker_healthcheck == 2500ms);
        CHECK(cl.cfg.log_file == "/var/log/app.log");
    }
    SECTION("bad values")
    {
        CHECK(usage_error_of({"--workers", "0"}).find("--workers") != std::string::npos);
        CHECK(usage_error_of({"--workers", "two"}).find("--workers") != std::string::npos);
        CHECK(usage_error_of({"--workers", "100000"}).find("--workers") != std::string::npos);
        CHECK(usage_error_of({"--timeout-worker-healthcheck", "0"}).find("--timeout-worker-healthcheck") !=
              std::string::npos);
        CHECK(usage_error_of({"--timeout-worker-healthcheck", "soon"}).find("--timeout-worker-healthcheck") !=
              std::string::npos);
        CHECK(usage_error_of({"--log-file"}).find("--log-file") != std::string::npos);
    }
    SECTION("usage() lists them")
    {
        auto text = cserve::usage("prog");
        for (char const* flag : {"--workers INTEGER", "--timeout-worker-healthcheck SECONDS", "--log-file PATH"})
            CHECK(text.find(flag) != std::string::npos);
        CHECK(text.find("WEB_CONCURRENCY") != std::string::npos);
    }
}

TEST_CASE("run: WEB_CONCURRENCY sets the default worker count, below CSERVE_WORKERS and --workers",
          "[run][environment][workers]")
{
    SECTION("WEB_CONCURRENCY alone")
    {
        env_guard web("WEB_CONCURRENCY", "3");
        auto cl = parse({});
        REQUIRE(cl.cfg.workers);
        CHECK(*cl.cfg.workers == 3u);
    }
    SECTION("CSERVE_WORKERS wins over WEB_CONCURRENCY, the flag over both")
    {
        env_guard web("WEB_CONCURRENCY", "3");
        env_guard workers("CSERVE_WORKERS", "5");
        CHECK(parse({}).cfg.workers.value_or(0) == 5u);
        CHECK(parse({"--workers", "2"}).cfg.workers.value_or(0) == 2u);
    }
    SECTION("a bad value is a usage_error naming the variable")
    {
        env_guard web("WEB_CONCURRENCY", "lots");
        CHECK(usage_error_of({}).find("WEB_CONCURRENCY") != std::string::npos);
    }
}

TEST_CASE("run: a factory that throws stops run() with status 1 before anything is served", "[run][factory]")
{
    std::vector<std::string> lines;
    cserve::config cfg;
    cfg.port = 0;
    cfg.workers = 1;
    cfg.log_sink = [&](cserve::log_level, std::string_view m) { lines.emplace_back(m); };
    int calls = 0;
    auto make = [&]() -> cserve::app_function {
        ++calls;
        throw std::runtime_error("no database");
    };
    CHECK(cserve::run(cserve::factory(make), cfg) == 1);
    CHECK(calls == 1);
    bool named = false;
    for (auto const& l : lines)
        named = named || (l.find("Error loading application") != std::string::npos && l.find("no database") != std::string::npos);
    CHECK(named);
}

TEST_CASE("run: an unusable --log-file or WEB_CONCURRENCY stops run() before it serves", "[run][factory][errors]")
{
    int calls = 0;
    auto make = [&]() -> cserve::app_function {
        ++calls;
        return [](cserve::scope&, cserve::receive, cserve::send) -> cserve::task<> { co_return; };
    };
    SECTION("a log file in a directory that does not exist: status 1")
    {
        cserve::config cfg;
        cfg.port = 0;
        cfg.log_file = "/nonexistent-dir-of-cserve-tests/app.log";
        CHECK(cserve::run(cserve::factory(make), cfg) == 1);
    }
    SECTION("a bad WEB_CONCURRENCY: status 2")
    {
        env_guard web("WEB_CONCURRENCY", "0");
        cserve::config cfg;
        cfg.port = 0;
        CHECK(cserve::run(cserve::factory(make), cfg) == 2);
    }
    CHECK(calls == 0);
}

TEST_CASE("run: a config built in code with a bad header or proxy list is a one-line error, status 2",
          "[run][factory][errors]")
{
    int calls = 0;
    auto make = [&]() -> cserve::app_function {
        ++calls;
        return [](cserve::scope&, cserve::receive, cserve::send) -> cserve::task<> { co_return; };
    };
    cserve::config cfg;
    cfg.port = 0;
    std::string expected;
    SECTION("a header value with a line break, one process")
    {
        cfg.headers = {{"x-ok", "1"}, {"x-split", "a\r\nset-cookie: b"}};
        expected = "Error: invalid header in config.headers: 'x-split'\n";
    }
    SECTION("a header name with a space, with workers")
    {
        cfg.workers = 2;
        cfg.headers = {{"x bad", "1"}};
        expected = "Error: invalid header in config.headers: 'x bad'\n";
    }
    SECTION("a forwarded_allow_ips entry that is no address")
    {
        cfg.workers = 2;
        cfg.proxy_headers = true;
        cfg.forwarded_allow_ips = "10.0.0.1,proxy.example";
        expected = "Error: not an IP address, network or '*': 'proxy.example'\n";
    }
    auto [status, err] = with_stderr([&] { return cserve::run(cserve::factory(make), cfg); });
    CHECK(status == 2);
    CHECK(err == expected);
    CHECK(calls == 0);
}
