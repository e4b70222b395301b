// Benchmark: cserve's request hot path without a network (Google Benchmark)
//
//   micro_hot_path [--benchmark_min_time=0.2] [--benchmark_filter=REGEX] [other Google Benchmark flags]
//
//   BM_parse                 a browser-like GET with 8 header fields through detail::request_parser,
//                            reset and re-emplaced per request as http1_connection does
//   BM_request_response/N    N pipelined GETs per write through a real detail::http1_connection
//                            (parser, scope, application, events, serializer) over a Unix socket
//                            pair; the client counts response bytes. items_per_second and
//                            per_request are per request.
//   BM_event                 an http::response_start with 2 headers and an http::response_body,
//                            each built and moved through cserve::event the way send() takes it
#include <cserve/cserve.hpp>
#include <cserve/detail/http1/connection.hpp>
#include <cserve/detail/http1/request_parser.hpp>
#include <cserve/detail/server_impl.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace {

namespace net = boost::asio;
namespace detail = cserve::detail;

//------------------------------------------------------------------------------

constexpr std::string_view browser_get =
    "GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n"
    "Host: 127.0.0.1:8000\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n"
    "Cache-Control: max-age=0\r\n"
    "\r\n";

void
BM_parse(benchmark::State& state)
{
    detail::request_head head;
    detail::body_target body;
    std::optional<detail::request_parser> parser;
    for (auto _ : state) {
        head.clear();
        parser.emplace(head, body);
        parser->header_limit(16 * 1024);
        parser->body_limit(boost::none);
        head.base = browser_get.data();
        head.size = browser_get.size();
        boost::system::error_code ec;
        auto n = parser->put(net::const_buffer(browser_get.data(), browser_get.size()), ec);
        if (ec || n != browser_get.size() || !parser->is_done() || head.fields.size() != 8) {
            state.SkipWithError("the request did not parse");
            break;
        }
        benchmark::DoNotOptimize(head.fields.data());
    }
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(browser_get.size()));
}
BENCHMARK(BM_parse);

//------------------------------------------------------------------------------

// examples/hello.cpp
cserve::task<>
hello(cserve::scope& scope, cserve::receive, cserve::send send)
{
    if (scope.type != cserve::scope_type::http)
        co_return;
    co_await send(cserve::http::response_start{
        .status = 200,
        .headers = {{"content-type", "text/plain"}},
    });
    co_await send(cserve::http::response_body{.body = "Hello, world!"});
}

// One connection as server_impl::start_connection makes it, on one end of a socket pair;
// the benchmark drives the other end and the io_context from its own thread.
class connection_pair {
public:
    explicit connection_pair(cserve::config cfg)
        : server_(ioc_, hello, std::move(cfg))
        , client_(ioc_)
    {
        net::local::stream_protocol::socket server_end(ioc_);
        net::local::connect_pair(client_, server_end);
        using connection = detail::http1_connection<detail::socket_type>;
        auto c = std::make_shared<connection>(server_, detail::socket_type(std::move(server_end)));
        connection::start(std::move(c));
    }

    ~connection_pair()
    {
        // EOF ends the session; run until it (and what it posted to the server) is done.
        boost::system::error_code ec;
        client_.close(ec);
        ioc_.run();
    }

    // Writes `requests` at once and reads `expect` bytes of responses into `in`.
    bool
    exchange(std::string const& requests, std::string& in, std::size_t expect)
    {
        boost::system::error_code ec;
        net::write(client_, net::buffer(requests), ec);
        if (ec)
            return false;
        in.resize(expect);
        bool done = false;
        net::async_read(client_, net::buffer(in), [&](boost::system::error_code rec, std::size_t) {
            ec = rec;
            done = true;
        });
        while (!done)
            ioc_.run_one();
        return done && !ec;
    }

    // The size of one response to `request`: every hello response has the same (the date
    // header has a fixed width), so a batch is read by its size alone.
    std::size_t
    response_size(std::string const& request)
    {
        boost::system::error_code ec;
        net::write(client_, net::buffer(request), ec);
        if (ec)
            return 0;
        std::string in;
        bool done = false;
        std::size_t size = 0;
        net::async_read_until(client_, net::dynamic_buffer(in), "Hello, world!",
                              [&](boost::system::error_code rec, std::size_t n) {
                                  size = rec ? 0 : n;
                                  done = true;
                              });
        while (!done)
            ioc_.run_one();
        return done && in.size() == size ? size : 0;
    }

private:
    net::io_context ioc_{1};
    detail::server_impl server_;
    net::local::stream_protocol::socket client_;
};

void
BM_request_response(benchmark::State& state)
{
    auto const depth = static_cast<std::size_t>(state.range(0));
    cserve::config cfg; // the defaults, as hello_bench runs with --no-access-log
    cfg.access_log = false;
    connection_pair pair(std::move(cfg));

    std::string const request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n";
    std::size_t const one = pair.response_size(request);
    if (one == 0) {
        state.SkipWithError("no response to the first request");
        return;
    }
    std::string requests;
    for (std::size_t i = 0; i < depth; ++i)
        requests += request;
    std::string in;
    for (auto _ : state) {
        if (!pair.exchange(requests, in, depth * one) || !in.ends_with("Hello, world!")) {
            state.SkipWithError("the responses did not arrive");
            break;
        }
    }
    auto const requests_done = state.iterations() * static_cast<std::int64_t>(depth);
    state.SetItemsProcessed(requests_done);
    state.counters["per_request"] = benchmark::Counter(static_cast<double>(requests_done),
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_request_response)->Arg(1)->Arg(16);

//------------------------------------------------------------------------------

// What send() does with an event: cserve::send::operator() takes it by value and moves it
// into the channel's send(), whose coroutine frame keeps it.
[[gnu::noinline]] std::size_t
channel_send(cserve::event e)
{
    cserve::event kept = std::move(e);
    benchmark::DoNotOptimize(&kept);
    return kept.index();
}

[[gnu::noinline]] std::size_t
app_send(cserve::event e)
{
    return channel_send(std::move(e));
}

void
BM_event(benchmark::State& state)
{
    for (auto _ : state) {
        std::size_t n = app_send(cserve::http::response_start{
            .status = 200,
            .headers = {{"content-type", "text/plain"}, {"content-length", "13"}},
        });
        n += app_send(cserve::http::response_body{.body = "Hello, world!"});
        benchmark::DoNotOptimize(n);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_event);

} // namespace

BENCHMARK_MAIN();
