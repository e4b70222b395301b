// Benchmark: a WebSocket load client (wrk speaks only HTTP)
//
//   ws_load --host 127.0.0.1 --port P --path /ws --connections N --size S
//           --duration SECONDS [--warmup SECONDS] [--binary|--text]
//
// Opens N connections (no permessage-deflate) one after the other; then each sends one
// message of S bytes, waits for its echo, and repeats. Round trips that complete during the
// warm-up are not counted. After the measured time every connection finishes its round
// trip and closes with 1000. Prints one JSON line:
//
//   {"connections":N,"size":S,"seconds":..,"messages":..,"rate":..,"p50_us":..,"p99_us":..,"errors":..}
//
// errors counts echoes that differ from what was sent (size, content or text/binary) and
// connections lost before the end. Exit status: 0 after a run with at least one message,
// 1 when a connection could not be opened (nothing is printed on stdout then) or nothing
// was echoed, 2 for bad arguments. Single-threaded, like the servers it measures.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
using ws_stream = websocket::stream<tcp::socket>;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

struct options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    std::string path = "/ws";
    std::size_t connections = 1;
    std::size_t size = 64;
    double duration = 10;
    double warmup = 0;
    bool binary = true;
};

// Everything the connections share; one thread, so no locking.
struct run_state {
    explicit run_state(net::any_io_executor ex) : grace(ex) {}

    clock_type::time_point measure_from;
    clock_type::time_point measure_until;
    bool stopping = false;
    std::size_t active = 0;
    std::uint64_t messages = 0;
    std::uint64_t errors = 0;
    std::vector<std::uint64_t> latencies_ns; // measured round trips only
    net::steady_timer grace;                 // how long closing may take
};

net::awaitable<void>
connect_all(options const& opt, std::vector<std::unique_ptr<ws_stream>>& conns)
{
    auto ex = co_await net::this_coro::executor;
    tcp::endpoint endpoint(net::ip::make_address(opt.host), opt.port);
    std::string const host_header = opt.host + ":" + std::to_string(opt.port);
    for (std::size_t i = 0; i < opt.connections; ++i) {
        auto ws = std::make_unique<ws_stream>(ex);
        co_await ws->next_layer().async_connect(endpoint, net::use_awaitable);
        ws->next_layer().set_option(tcp::no_delay(true));
        ws->secure_prng(false);    // frame masks need not be unpredictable here
        ws->auto_fragment(false);  // one frame per message
        co_await ws->async_handshake(host_header, opt.path, net::use_awaitable);
        conns.push_back(std::move(ws));
    }
}

net::awaitable<void>
client(ws_stream& ws, std::string const& payload, bool binary, run_state& s)
{
    beast::flat_buffer buffer;
    ws.binary(binary);
    bool lost = false;
    while (!s.stopping) {
        auto start = clock_type::now();
        auto [wec, wn] = co_await ws.async_write(net::buffer(payload), use_tuple);
        if (wec) {
            lost = true;
            break;
        }
        auto [rec, rn] = co_await ws.async_read(buffer, use_tuple);
        auto end = clock_type::now();
        if (rec) {
            lost = true;
            break;
        }
        auto echo = buffer.cdata();
        bool const same = echo.size() == payload.size() && ws.got_binary() == binary &&
                          std::memcmp(echo.data(), payload.data(), payload.size()) == 0;
        buffer.consume(buffer.size());
        if (!same) {
            ++s.errors;
        } else if (end >= s.measure_from && end <= s.measure_until) {
            ++s.messages;
            s.latencies_ns.push_back(static_cast<std::uint64_t>(
                std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()));
        }
    }
    // A connection dropped by the grace timer was not lost: it was closed on purpose.
    if (lost && !s.stopping)
        ++s.errors;
    if (!lost)
        co_await ws.async_close(websocket::close_code::normal, use_tuple);
    if (--s.active == 0)
        s.grace.cancel();
}

net::awaitable<void>
run(options const& opt, std::vector<std::unique_ptr<ws_stream>>& conns, run_state& s)
{
    auto ex = co_await net::this_coro::executor;
    std::string payload(opt.size, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i)
        payload[i] = static_cast<char>('a' + i % 26);

    auto const to_duration = [](double seconds) {
        return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    };
    s.measure_from = clock_type::now() + to_duration(opt.warmup);
    s.measure_until = s.measure_from + to_duration(opt.duration);
    s.active = conns.size();
    for (auto& ws : conns)
        net::co_spawn(ex, client(*ws, payload, opt.binary, s), [](std::exception_ptr e) {
            if (e)
                std::rethrow_exception(e);
        });

    net::steady_timer timer(ex, s.measure_until);
    co_await timer.async_wait(use_tuple);
    s.stopping = true;
    // Every connection finishes its round trip and closes; those that take too long are
    // cut off.
    if (s.active > 0) {
        s.grace.expires_after(std::chrono::seconds(2));
        co_await s.grace.async_wait(use_tuple);
    }
    for (auto& ws : conns) {
        beast::error_code ec;
        ws->next_layer().close(ec);
    }
}

template <class T>
bool
parse_number(std::string_view text, T& out)
{
    auto r = std::from_chars(text.data(), text.data() + text.size(), out);
    return !text.empty() && r.ec == std::errc() && r.ptr == text.data() + text.size();
}

bool
parse_seconds(std::string_view text, double& out)
{
    std::string s(text);
    char* end = nullptr;
    out = std::strtod(s.c_str(), &end);
    return !s.empty() && end == s.c_str() + s.size() && std::isfinite(out) && out >= 0;
}

int
usage(char const* program)
{
    std::fprintf(stderr,
                 "usage: %s --host 127.0.0.1 --port P --path /ws --connections N --size S\n"
                 "       --duration SECONDS [--warmup SECONDS] [--binary|--text]\n",
                 program);
    return 2;
}

double
percentile_us(std::vector<std::uint64_t>& v, double p)
{
    if (v.empty())
        return 0;
    auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return static_cast<double>(v[k]) / 1000.0;
}

} // namespace

int
main(int argc, char** argv)
{
    options opt;
    bool have_port = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--binary" || arg == "--text") {
            opt.binary = arg == "--binary";
            continue;
        }
        if (i + 1 >= argc)
            return usage(argv[0]);
        std::string_view value = argv[++i];
        bool ok = true;
        if (arg == "--host")
            opt.host = value;
        else if (arg == "--port")
            ok = have_port = parse_number(value, opt.port);
        else if (arg == "--path")
            opt.path = value;
        else if (arg == "--connections")
            ok = parse_number(value, opt.connections) && opt.connections > 0;
        else if (arg == "--size")
            ok = parse_number(value, opt.size);
        else if (arg == "--duration")
            ok = parse_seconds(value, opt.duration) && opt.duration > 0;
        else if (arg == "--warmup")
            ok = parse_seconds(value, opt.warmup);
        else
            ok = false;
        if (!ok)
            return usage(argv[0]);
    }
    if (!have_port)
        return usage(argv[0]);

    net::io_context ioc(1);
    std::vector<std::unique_ptr<ws_stream>> conns;
    conns.reserve(opt.connections);
    std::exception_ptr failure;
    net::co_spawn(ioc, connect_all(opt, conns), [&](std::exception_ptr e) { failure = e; });
    try {
        ioc.run();
        if (failure)
            std::rethrow_exception(failure);
    } catch (std::exception const& e) {
        std::fprintf(stderr, "ws_load: cannot connect to ws://%s:%u%s (connection %zu of %zu): %s\n",
                     opt.host.c_str(), static_cast<unsigned>(opt.port), opt.path.c_str(), conns.size() + 1,
                     opt.connections, e.what());
        return 1;
    }

    run_state s(ioc.get_executor());
    s.latencies_ns.reserve(1 << 20);
    ioc.restart();
    net::co_spawn(ioc, run(opt, conns, s), [](std::exception_ptr e) {
        if (e)
            std::rethrow_exception(e);
    });
    try {
        ioc.run();
    } catch (std::exception const& e) {
        std::fprintf(stderr, "ws_load: %s\n", e.what());
        return 1;
    }

    double const rate = static_cast<double>(s.messages) / opt.duration;
    double const p50 = percentile_us(s.latencies_ns, 0.50);
    double const p99 = percentile_us(s.latencies_ns, 0.99);
    std::printf("{\"connections\":%zu,\"size\":%zu,\"seconds\":%.3f,\"messages\":%llu,\"rate\":%.1f,"
                "\"p50_us\":%.1f,\"p99_us\":%.1f,\"errors\":%llu}\n",
                opt.connections, opt.size, opt.duration, static_cast<unsigned long long>(s.messages), rate, p50, p99,
                static_cast<unsigned long long>(s.errors));
    std::fflush(stdout);
    if (s.messages == 0) {
        std::fprintf(stderr, "ws_load: no message was echoed\n");
        return 1;
    }
    return 0;
}
