// tests/unit/run_test.cpp -- command-line flags and the --help text
// SPDX-License-Identifier: BSL-1.0
#include <cserve/run.hpp>

#include "catch.hpp"

#include <chrono>
#include <initializer_list>
#include <string>
#include <vector>

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
