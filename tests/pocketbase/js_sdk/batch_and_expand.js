// The official JS SDK (pocketbase.cjs.js, 0.28.0, vendored unmodified from github.com/pocketbase/js-sdk dist/)
// against one backend: `node batch_and_expand.js <sdk.cjs.js> <base url>`; prints what it got as one JSON line.
// tests/pocketbase/test_sdks.py runs it against stock PocketBase and a pbfast tenant and compares the two.
const PocketBase = require(process.argv[2]);

async function outcome(promise) {
    try {
        return { ok: await promise };
    } catch (err) {
        return { status: err.status, response: err.response };
    }
}

async function main() {
    const pb = new PocketBase(process.argv[3]);
    await pb.collection("_superusers").authWithPassword("test@example.com", "1234567890");
    const out = {};

    const batch = pb.createBatch();
    batch.collection("demo2").create({ title: "js_create" }, { fields: "title" });
    batch.collection("demo2").upsert({ id: "achvryl401bhse3", title: "js_upsert" }, { fields: "id,title" });
    batch.collection("demo2").upsert({ title: "js_upsert_new" }, { fields: "title" });
    batch.collection("demo2").update("llvuca81nly1qls", { title: "js_update" }, { fields: "id,title" });
    batch.collection("demo5").create({ total: 9, rel_one: "qzaqccwrmva4o1n" }, { expand: "rel_one", fields: "total,expand.rel_one.id" });
    batch.collection("demo2").delete("0yxhwia2amd8gec");
    out.batch = await outcome(batch.send());

    const failing = pb.createBatch();
    failing.collection("demo2").create({ title: "js_rolled_back" });
    failing.collection("demo2").create({ title: "" });
    out.failing = await outcome(failing.send());

    const guest = new PocketBase(process.argv[3]);
    const ruled = guest.createBatch();
    ruled.collection("demo3").update("1tmknxy2868d869", { title: "js_guest" });
    out.ruled = await outcome(ruled.send());

    out.titles = await outcome(pb.collection("demo2").getFullList({ sort: "title", fields: "title" }));
    out.list = await outcome(pb.collection("demo1").getList(1, 2, { expand: "rel_one,rel_many.rel", sort: "created" }));
    out.view = await outcome(pb.collection("demo3").getOne("lcl9d87w22ml6jy", { expand: "demo4_via_rel_many_no_cascade_required.self_rel_one", fields: "id,expand" }));
    out.guestList = await outcome(guest.collection("demo4").getList(1, 10, { expand: "rel_one_no_cascade", sort: "id", fields: "id,expand" }));
    console.log(JSON.stringify(out));
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
