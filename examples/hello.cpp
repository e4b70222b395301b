// Example: the smallest cserve program, a hello world on 127.0.0.1:8000
#include <cserve/cserve.hpp>

cserve::task<> app(cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    if (scope.type != cserve::scope_type::http)
        co_return;
    co_await send(cserve::http::response_start{
        .status = 200,
        .headers = {{"content-type", "text/plain"}},
    });
    co_await send(cserve::http::response_body{.body = "Hello, world!"});
}

int main() { return cserve::run(app, "127.0.0.1", 8000); }
