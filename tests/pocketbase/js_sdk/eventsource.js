// A minimal EventSource for node 20 (it has fetch but no EventSource), enough for the JS SDK's realtime
// client: named events, `id:` lines, addEventListener/removeEventListener, onerror and close(). No reconnects
// (the SDK reconnects itself through onerror).
class EventSource {
    constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.onerror = null;
        this._listeners = {};
        this._abort = new AbortController();
        this._run().catch((err) => this._fail(err));
    }

    addEventListener(name, fn) {
        (this._listeners[name] = this._listeners[name] || []).push(fn);
    }

    removeEventListener(name, fn) {
        this._listeners[name] = (this._listeners[name] || []).filter((f) => f !== fn);
    }

    close() {
        this.readyState = 2;
        this._abort.abort();
    }

    _fail(err) {
        if (this.readyState === 2) return;
        this.readyState = 2;
        if (this.onerror) this.onerror(err);
    }

    async _run() {
        const response = await fetch(this.url, { headers: { Accept: "text/event-stream" }, signal: this._abort.signal });
        if (!response.ok) throw new Error(`EventSource: status ${response.status}`);
        this.readyState = 1;
        const decoder = new TextDecoder();
        let buffer = "";
        for await (const chunk of response.body) {
            buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
                this._dispatch(buffer.slice(0, end));
                buffer = buffer.slice(end + 2);
            }
        }
        this._fail(new Error("EventSource: stream ended"));
    }

    _dispatch(block) {
        let name = "message", id = "", data = [];
        for (const line of block.split("\n")) {
            const colon = line.indexOf(":");
            if (colon === 0) continue;
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") name = value;
            else if (field === "id") id = value;
            else if (field === "data") data.push(value);
        }
        const event = { type: name, data: data.join("\n"), lastEventId: id };
        for (const fn of this._listeners[name] || []) fn(event);
    }
}

module.exports = EventSource;
