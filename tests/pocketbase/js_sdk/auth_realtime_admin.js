// The official JS SDK's auth flows, realtime subscriptions, files, settings and admin services against one
// backend: `node auth_realtime_admin.js <sdk.cjs.js> <base url>`; prints what it got as one JSON line (only
// values both backends must agree on: no tokens, no generated ids). Run by tests/pocketbase/test_sdks.py.
global.EventSource = require("./eventsource.js"); // node 20 has none; the SDK's realtime client needs one
const PocketBase = require(process.argv[2]);
const base = process.argv[3];

async function outcome(promise) {
    try {
        return { ok: await promise };
    } catch (err) {
        return { status: err.status, response: err.response };
    }
}

function withoutToken(result) {
    if (result.ok && typeof result.ok.token === "string") result.ok.token = "<token>";
    return result;
}

async function until(check, ms = 5000) {
    const deadline = Date.now() + ms;
    while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

async function auth(out) {
    const client = new PocketBase(base);
    out.methods = await outcome(client.collection("clients").listAuthMethods({ fields: "password,otp,mfa" }));
    out.wrongPassword = await outcome(client.collection("clients").authWithPassword("test@example.com", "nope"));
    out.login = withoutToken(await outcome(client.collection("clients").authWithPassword("test@example.com", "1234567890",
        { fields: "token,record.id,record.email" })));
    out.loginStore = [client.authStore.isValid, client.authStore.record && client.authStore.record.email];
    out.refresh = withoutToken(await outcome(client.collection("clients").authRefresh(
        { fields: "token,record.id,record.verified" })));
    out.refreshStore = [client.authStore.isValid, client.authStore.record.id];  // the token may be the same (same second)
    out.emailChange = await outcome(client.collection("clients").requestEmailChange("not-an-email"));
    client.authStore.clear();
    const mfa = await outcome(client.collection("users").authWithPassword("test@example.com", "1234567890"));
    out.mfaFirstFactor = [mfa.status, Object.keys((mfa.response || {})).sort()];
    out.verification = await outcome(client.collection("users").requestVerification("missing@example.com"));
    out.reset = await outcome(client.collection("users").requestPasswordReset("missing@example.com"));
    out.resetConfirm = await outcome(client.collection("users").confirmPasswordReset("bad", "12345678", "12345678"));
    const otp = await outcome(client.collection("users").requestOTP("missing@example.com"));
    out.otpRequest = Object.keys(otp.ok || {}).sort();
    out.otpAuth = await outcome(client.collection("users").authWithOTP(otp.ok ? otp.ok.otpId : "x", "000000"));
}

async function superuserServices(pb, out) {
    const impersonated = await pb.collection("users").impersonate("4q1xlclmfloku33", 100, { fields: "record.email" });
    out.impersonated = [impersonated.authStore.isValid, impersonated.authStore.record.email];
    out.asUser = await outcome(impersonated.collection("users").getOne("4q1xlclmfloku33", { fields: "id,email" }));
    out.settings = await outcome(pb.settings.getAll({ fields: "meta.appName,batch,rateLimits.enabled" }));
    out.settingsUpdate = await outcome(pb.settings.update({ meta: { appName: "js sdk" } }, { fields: "meta.appName" }));
    out.testS3 = await outcome(pb.settings.testS3("storage"));
    out.appleSecret = await outcome(pb.settings.generateAppleClientSecret("", "", "", "invalid", -1));
    out.health = await outcome(pb.health.check({ fields: "code,message" }));
    out.crons = await outcome(pb.crons.getFullList());
    out.backups = await outcome(pb.backups.getFullList({ fields: "key" }));
    out.logs = await outcome(pb.logs.getList(1, 1, { filter: "id = 'none'" }));

    const token = await pb.files.getToken();
    const record = await pb.collection("demo1").getOne("84nmscqy84lsi1t", { fields: "id,collectionId,collectionName,file_one" });
    const url = pb.files.getURL(record, record.file_one, { token });
    const file = await fetch(url);
    out.file = [url.replace(base, "").replace(token, "<token>"), file.status, (await file.text()).length];
}

// A stored upload's name: the original name (a short one padded with random characters), "_", 10 random
// characters, the extension: kept are its first character and its extension.
const stored = (name) => name.replace(/^(.)[a-z0-9]*_[a-z0-9]{10}(\.[a-z0-9]+)$/i, "$1*_<random>$2");

async function files(pb, out) {
    const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=", "base64");
    const created = await pb.collection("demo1").create({
        text: "js_files", file_one: new File(["secret"], "one.txt", { type: "text/plain" }),
        file_many: [new File([png], "a.png", { type: "image/png" }), new File(["b"], "b.txt")],
    }, { fields: "id,text,file_one,file_many" });
    out.filesCreated = [created.text, stored(created.file_one), created.file_many.map(stored)];
    const appended = await pb.collection("demo1").update(created.id, {
        "file_many+": new File(["c"], "c.txt"), "file_many-": [created.file_many[1]],
    }, { fields: "file_many" });
    out.filesUpdated = appended.file_many.map(stored);
    const token = await pb.files.getToken();
    const record = { ...created, collectionName: "demo1", collectionId: "wsmn24bux7wo113" };
    const fetched = [];
    for (const [name, options] of [[created.file_one, {}], [created.file_one, { token }],
                                   [created.file_many[0], { thumb: "1x1" }], [created.file_many[0], { download: true }]]) {
        const response = await fetch(pb.files.getURL(record, name, options));
        fetched.push([response.status, response.headers.get("content-type"),
                      (response.headers.get("content-disposition") || "").replace(/"(.*)"/, (_, name) => `"${stored(name)}"`)]);
    }
    out.filesFetched = fetched;
    out.filesCleared = await outcome(pb.collection("demo1").update(created.id, { file_one: null, file_many: [] },
        { fields: "file_one,file_many" }));
    await pb.collection("demo1").delete(created.id);
}

async function realtime(pb, out) {
    const events = [];
    const unsubscribeAll = await pb.collection("demo2").subscribe("*", (e) => events.push(["*", e.action, e.record.title]),
        { fields: "title" });
    const created = await pb.collection("demo2").create({ title: "js_rt_one" });
    const unsubscribeOne = await pb.collection("demo2").subscribe(created.id, (e) => events.push(["one", e.action, e.record.title]));
    await until(() => events.length >= 1);
    await pb.collection("demo2").update(created.id, { title: "js_rt_two" });
    await until(() => events.length >= 3);
    await unsubscribeOne();
    await pb.collection("demo2").delete(created.id);
    await until(() => events.length >= 4);
    await unsubscribeAll();
    await pb.collection("demo2").create({ title: "js_rt_unheard" });

    const guest = new PocketBase(base);
    const guestEvents = [];
    await guest.collection("demo3").subscribe("*", (e) => guestEvents.push(e.action));  // its listRule hides them
    await guest.collection("demo2").subscribe("*", (e) => guestEvents.push(e.record.title));
    await pb.collection("demo3").create({ title: "js_rt_hidden" });
    await pb.collection("demo2").create({ title: "js_rt_public" });
    await until(() => guestEvents.length >= 1);
    await new Promise((r) => setTimeout(r, 200));
    out.events = events.sort();
    out.guestEvents = guestEvents;
    out.connected = [pb.realtime.isConnected, guest.realtime.isConnected];
    await guest.realtime.unsubscribe();
    out.disconnected = guest.realtime.isConnected;
}

async function main() {
    const pb = new PocketBase(base);
    await pb.collection("_superusers").authWithPassword("test@example.com", "1234567890");
    const out = {};
    await auth(out);
    await superuserServices(pb, out);
    await files(pb, out);
    await realtime(pb, out);
    pb.realtime.unsubscribe();
    console.log(JSON.stringify(out));
    process.exit(0);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
