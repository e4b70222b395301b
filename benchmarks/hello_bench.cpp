// Benchmark: examples/hello.cpp plus a WebSocket echo on any path, for the load tests
//
//   hello_bench --port N --no-access-log [every other flag of cserve::run; --help lists them]
//
// HTTP, any path and method: 200, content-type text/plain, "Hello, world!" (chunked, as
// hello.cpp sends it). WebSocket, any path: accepts, echoes text as text and bytes as bytes
// until the client disconnects.
#include <cserve/cserve.hpp>

#include <utility>
#include <variant>

namespace {

cserve::task<>
echo(cserve::receive receive, cserve::send send)
{
    co_await receive(); // websocket.connect
    co_await send(cserve::websocket::accept{});
    for (;;) {
        auto e = co_await receive();
        auto* m = std::get_if<cserve::websocket::receive>(&e);
        if (!m)
            co_return; // websocket.disconnect
        co_await send(cserve::websocket::send{.bytes = std::move(m->bytes), .text = std::move(m->text)});
    }
}

cserve::task<>
app(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    if (scope.type == cserve::scope_type::websocket) {
        co_await echo(receive, send);
        co_return;
    }
    if (scope.type != cserve::scope_type::http)
        co_return;
    co_await send(cserve::http::response_start{
        .status = 200,
        .headers = {{"content-type", "text/plain"}},
    });
    co_await send(cserve::http::response_body{.body = "Hello, world!"});
}

} // namespace

int
main(int argc, char** argv)
{
    return cserve::run(app, argc, argv);
}
