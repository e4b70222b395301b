// Example: a broadcast chat room: several WebSocket clients, one room, state shared on one io_context
//
//   build/examples/websocket_chat --port 8000 [--help for every flag]
//   then open http://127.0.0.1:8000/ in two browser tabs and type.
//
// Routes:
//   GET /        the chat page (HTML and JavaScript, below)
//   WS  /ws      the room: every text message a client sends goes to every client, itself
//                included, as "user<N>: <text>"
//   anything else: 404 (403 for a WebSocket)
//
// Each client has a bounded queue of outgoing messages and a writer coroutine that drains it,
// so a client that reads slowly only loses its own messages: it never holds up the room.
#include <cserve/cserve.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <variant>

namespace {

namespace net = boost::asio;
namespace http = cserve::http;
namespace ws = cserve::websocket;
using namespace boost::asio::experimental::awaitable_operators; // a && b: run both, wait for both

constexpr std::size_t max_message = 1000; // bytes of text kept from each message
constexpr std::size_t queue_size = 64;    // messages waiting for a slow client before drops

// The page. Received messages are added as text nodes, never as HTML, so a message cannot
// inject markup. window.chatReady is set while the WebSocket is open (the browser test
// waits for it).
constexpr std::string_view page = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cserve chat</title>
<style>
  body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
  #messages { list-style: none; padding: 0.5em; height: 20em; overflow-y: auto; border: 1px solid #ccc; }
  #input { width: 30em; }
</style>
</head>
<body>
<h1>cserve chat</h1>
<p id="status">connecting...</p>
<ul id="messages"></ul>
<input id="input" autocomplete="off" autofocus placeholder="Say something">
<button id="send">Send</button>
<script>
const messages = document.getElementById("messages");
const input = document.getElementById("input");
const status = document.getElementById("status");
const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
window.chatReady = false;

socket.onopen = () => {
  status.textContent = "connected";
  window.chatReady = true;
};
socket.onclose = (event) => {
  status.textContent = "disconnected (" + event.code + ")";
  window.chatReady = false;
  window.chatCloseCode = event.code;
};
socket.onmessage = (event) => {
  const item = document.createElement("li");
  item.appendChild(document.createTextNode(event.data));
  messages.appendChild(item);
  messages.scrollTop = messages.scrollHeight;
};

function send() {
  if (input.value && socket.readyState === WebSocket.OPEN) {
    socket.send(input.value);
    input.value = "";
  }
  input.focus();
}
document.getElementById("send").onclick = send;
input.onkeydown = (event) => {
  if (event.key === "Enter")
    send();
};
</script>
</body>
</html>
)html";

// One connected client. It lives in its connection's coroutine frame; the room only
// points to it while it is a member.
struct member {
    member(std::string n, net::any_io_executor ex) : name(std::move(n)), outbox(ex, queue_size) {}

    std::string name;
    // Messages waiting to be sent to this client: at most queue_size of them.
    net::experimental::channel<void(boost::system::error_code, std::string)> outbox;
};

// The room: every connected client. One object shared by all connections.
//
// No lock: run() serves every connection of a process on one io_context thread, so only
// one coroutine touches the room at a time. An io_context run on several threads would need
// a strand (or a mutex) around the room, and a concurrent_channel for the outboxes. With
// several worker processes, each process has a room of its own.
class room {
public:
    std::string
    next_name()
    {
        return "user" + std::to_string(++joined_);
    }

    void
    join(member& m)
    {
        members_.insert(&m);
        broadcast(m.name + " joined");
    }

    void
    leave(member& m)
    {
        members_.erase(&m);
        broadcast(m.name + " left");
    }

    // Queues `text` for every member without waiting. A member whose outbox is full
    // (a slow reader) misses this message; a chat that must not lose messages would
    // disconnect that member instead.
    void
    broadcast(std::string const& text)
    {
        for (member* m : members_)
            m->outbox.try_send(boost::system::error_code{}, text); // false: dropped for m only
    }

private:
    std::unordered_set<member*> members_;
    unsigned joined_ = 0;
};

// At most max_message bytes of `text`, cut at a UTF-8 character boundary (a text frame
// must be valid UTF-8).
std::string_view
clip(std::string_view text)
{
    if (text.size() <= max_message)
        return text;
    std::size_t n = max_message;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80)
        --n; // text[n] continues a character: cut before that character
    return text.substr(0, n);
}

// Reads the client's messages and broadcasts them, until the client goes.
cserve::task<>
read_loop(room& r, member& me, cserve::receive receive)
{
    for (;;) {
        auto e = co_await receive();
        auto* m = std::get_if<ws::receive>(&e);
        if (!m)
            break; // websocket.disconnect: the client left, or the server is closing
        if (m->text && !m->text->empty())
            r.broadcast(me.name + ": " + std::string(clip(*m->text)));
    }
    me.outbox.close(); // wakes the writer, which then ends
}

// Sends the client what the room queued for it, one message at a time.
cserve::task<>
write_loop(member& me, cserve::send send)
{
    for (;;) {
        auto [ec, text] = co_await me.outbox.async_receive(net::as_tuple(net::use_awaitable));
        if (ec)
            co_return; // closed by read_loop (or cancelled)
        try {
            co_await send(ws::send{.text = std::move(text)});
        } catch (cserve::client_disconnected const&) {
            co_return; // read_loop sees the disconnect and ends too
        }
    }
}

cserve::task<>
chat(room& r, cserve::receive receive, cserve::send send)
{
    co_await receive(); // websocket.connect
    co_await send(ws::accept{});

    member me(r.next_name(), co_await net::this_coro::executor);
    r.join(me);
    // Leave the room however this coroutine ends (normally, or by an exception).
    struct leave_on_exit {
        room& r;
        member& m;
        ~leave_on_exit() { r.leave(m); }
    } guard{r, me};

    // Reading and writing run side by side: a client that reads slowly never stops this one
    // from talking. Both end when the client goes: read_loop closes the outbox, which stops
    // write_loop; if either throws, the other is cancelled.
    co_await (read_loop(r, me, receive) && write_loop(me, send));
}

cserve::task<>
app(room& r, cserve::scope& scope, cserve::receive receive, cserve::send send)
{
    if (scope.type == cserve::scope_type::websocket) {
        if (scope.path == "/ws") {
            co_await chat(r, receive, send);
        } else {
            co_await receive();         // websocket.connect
            co_await send(ws::close{}); // closing before accepting: 403
        }
        co_return;
    }
    if (scope.type != cserve::scope_type::http)
        co_return; // no lifespan work to do

    if ((scope.method == "GET" || scope.method == "HEAD") && scope.path == "/") {
        co_await send(http::response_start{
            .status = 200,
            .headers = {{"content-type", "text/html; charset=utf-8"}, {"content-length", std::to_string(page.size())}},
        });
        co_await send(http::response_body{.body = std::string(page)});
    } else {
        co_await send(http::response_start{
            .status = 404,
            .headers = {{"content-type", "text/plain"}, {"content-length", "9"}},
        });
        co_await send(http::response_body{.body = "Not Found"});
    }
}

} // namespace

int
main(int argc, char** argv)
{
    room r; // outlives run(), and with it every connection
    return cserve::run(
        [&r](cserve::scope& scope, cserve::receive receive, cserve::send send) {
            return app(r, scope, receive, send);
        },
        argc, argv);
}
