/* modelvault._cdc: the chunks of a whole segment, cut and hashed in one call.
 *
 * cut_hash(buf, stop, kind, skip) cuts buf with FastCDC from its start, chunk after chunk
 * while the next chunk starts before stop, and gives the object id of each chunk that
 * starts at skip or later: the BLAKE3 hash of the byte `kind` followed by the chunk
 * (modelvault.core.hashing.object_id). Chunks before skip are only cut: a segment of a
 * file is cut from a little before its start, so that its cuts are the file's by then. It runs
 * without the GIL from the first cut to the last hash: a save cuts and hashes ~16 K
 * chunks per GiB, and pyfastcdc and the blake3 package each take and release the GIL
 * once per chunk, so two threads doing it in Python spend much of their time waiting
 * for each other.
 *
 * object_ids(kind, buf, ends, expect) hashes consecutive chunks whose cut points are known
 * (a new version's bytes at the stored chunks' boundaries, odb.known) in one call; given
 * the ids expected, it stops at the first that differs.
 *
 * screen(buf, offset, blocks, ids) tests ids against the filter of a multi-pack index
 * (docs/format.md section 5.1) at once: a save asks it for the chunks of each segment.
 *
 * The cut is pyfastcdc 0.3's _cut_gear (FastCDC 2020, normalized chunking level 1, seed
 * 0; MIT licence), for the parameters of modelvault.core.chunking; the gear table below
 * is pyfastcdc's. BLAKE3 is the official C implementation, in ./_blake3 (see setup.py). The Python code
 * checks the constants below against its own and falls back to pyfastcdc and blake3 when
 * this module was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_blake3/blake3_impl.h"

#define MIN_SIZE 16384u                  /* 16 KiB */
#define AVG_SIZE 65536u                  /* 64 KiB: 16 bits */
#define MAX_SIZE 524288u                 /* 512 KiB */
#define MASK_S 0x0000D90703537000ull     /* pyfastcdc MASKS[16 + 1] */
#define MASK_L 0x0000D90F03530000ull     /* pyfastcdc MASKS[16 - 1] */
#define ID_LEN BLAKE3_OUT_LEN

static const uint64_t GEAR[256] = {
    0x3B5D3C7D207E37DCu, 0x784D68BA91123086u, 0xCD52880F882E7298u, 0xEACF8E4E19FDCCA7u,
    0xC31F385DFBD1632Bu, 0x1D5F27001E25ABE6u, 0x83130BDE3C9AD991u, 0xC4B225676E9B7649u,
    0xAA329B29E08EB499u, 0xB67FCBD21E577D58u, 0x0027BAAADA2ACF6Bu, 0xE3EF2D5AC73C2226u,
    0x0890F24D6ED312B7u, 0xA809E036851D7C7Eu, 0xF0A6FE5E0013D81Bu, 0x1D026304452CEC14u,
    0x03864632648E248Fu, 0xCDAACF3DCD92B9B4u, 0xF5E012E63C187856u, 0x8862F9D3821C00B6u,
    0xA82F7338750F6F8Au, 0x1E583DC6C1CB0B6Fu, 0x7A3145B69743A7F1u, 0xABB20FEE404807EBu,
    0xB14B3CFE07B83A5Du, 0xB9DC27898ADB9A0Fu, 0x3703F5E91BAA62BEu, 0xCF0BB866815F7D98u,
    0x3D9867C41EA9DCD3u, 0x1BE1FA65442BF22Cu, 0x14300DA4C55631D9u, 0xE698E9CBC6545C99u,
    0x4763107EC64E92A5u, 0xC65821FC65696A24u, 0x76196C064822F0B7u, 0x485BE841F3525E01u,
    0xF652BC9C85974FF5u, 0xCAD8352FACE9E3E9u, 0x2A6ED1DCEB35E98Eu, 0xC6F483BADC11680Fu,
    0x3CFD8C17E9CF12F1u, 0x89B83C5E2EA56471u, 0xAE665CFD24E392A9u, 0xEC33C4E504CB8915u,
    0x3FB9B15FC9FE7451u, 0xD7FD1FD1945F2195u, 0x31ADE0853443EFD8u, 0x255EFC9863E1E2D2u,
    0x10EAB6008D5642CFu, 0x46F04863257AC804u, 0xA52DC42A789A27D3u, 0xDAAADF9CE77AF565u,
    0x6B479CD53D87FEBBu, 0x6309E2D3F93DB72Fu, 0xC5738FFBAA1FF9D6u, 0x6BD57F3F25AF7968u,
    0x67605486D90D0A4Au, 0xE14D0B9663BFBDAEu, 0xB7BBD8D816EB0414u, 0xDEF8A4F16B35A116u,
    0xE7932D85AAAFFED6u, 0x08161CBAE90CFD48u, 0x855507BEB294F08Bu, 0x91234EA6FFD399B2u,
    0xAD70CF4B2435F302u, 0xD289A97565BC2D27u, 0x8E558437FFCA99DEu, 0x96D2704B7115C040u,
    0x0889BBCDFC660E41u, 0x5E0D4E67DC92128Du, 0x72A9F8917063ED97u, 0x438B69D409E016E3u,
    0xDF4FED8A5D8A4397u, 0x00F41DCF41D403F7u, 0x4814EB038E52603Fu, 0x9DAFBACC58E2D651u,
    0xFE2F458E4BE170AFu, 0x4457EC414DF6A940u, 0x06E62F1451123314u, 0xBD1014D173BA92CCu,
    0xDEF318E25ED57760u, 0x9FEA0DE9DFCA8525u, 0x459DE1E76C20624Bu, 0xAEEC189617E2D666u,
    0x126A2C06AB5A83CBu, 0xB1321532360F6132u, 0x65421503DBB40123u, 0x2D67C287EA089AB3u,
    0x6C93BFF5A56BD6B6u, 0x4FFB2036CAB6D98Du, 0xCE7B785B1BE7AD4Fu, 0xEDB42EF6189FD163u,
    0xDC905288703988F6u, 0x365F9C1D2C691884u, 0xC640583680D99BFEu, 0x3CD4624C07593EC6u,
    0x7F1EA8D85D7C5805u, 0x014842D480B57149u, 0x0B649BCB5A828688u, 0xBCD5708ED79B18F0u,
    0xE987C862FBD2F2F0u, 0x982731671F0CD82Cu, 0xBAF13E8B16D8C063u, 0x8EA3109CBD951BBAu,
    0xD141045BFB385CADu, 0x2ACBC1A0AF1F7D30u, 0xE6444D89DF03BFDFu, 0xA18CC771B8188FF9u,
    0x9834429DB01C39BBu, 0x214ADD07FE086A1Fu, 0x8F07C19B1F6B3FF9u, 0x56A297B1BF4FFE55u,
    0x94D558E493C54FC7u, 0x40BFC24C764552CBu, 0x931A706F8A8520CBu, 0x32229D322935BD52u,
    0x2560D0F5DC4FEFAFu, 0x9DBCC48355969BB6u, 0x0FD81C3985C0B56Au, 0xE03817E1560F2BDAu,
    0xC1BB4F81D892B2D5u, 0xB0C4864F4E28D2D7u, 0x3ECC49F9D9D6C263u, 0x51307E99B52BA65Eu,
    0x8AF2B688DA84A752u, 0xF5D72523B91B20B6u, 0x6D95FF1FF4634806u, 0x562F21555458339Au,
    0xC0CE47F889336346u, 0x487823E5089B40D8u, 0xE4727C7EBC6D9592u, 0x5A8F7277E94970BAu,
    0xFCA2F406B1C8BB50u, 0x5B1F8A95F1791070u, 0xD304AF9FC9028605u, 0x5440AB7FC930E748u,
    0x312D25FBCA2AB5A1u, 0x10F4A4B234A4D575u, 0x90301D55047E7473u, 0x3B6372886C61591Eu,
    0x293402B77C444E06u, 0x451F34A4D3E97DD7u, 0x3158D814D81BC57Bu, 0x034942425B9BDA69u,
    0xE2032FF9E532D9BBu, 0x62AE066B8B2179E5u, 0x9545E10C2F8D71D8u, 0x7FF7483EB2D23FC0u,
    0x00945FCEBDC98D86u, 0x8764BBBE99B26CA2u, 0x1B1EC62284C0BFC3u, 0x58E0FCC4F0AA362Bu,
    0x5F4ABEFA878D458Du, 0xFD74AC2F9607C519u, 0xA4E3FB37DF8CBFA9u, 0xBF697E43CAC574E5u,
    0x86F14A3F68F4CD53u, 0x24A23D076F1CE522u, 0xE725CD8048868CC8u, 0xBF3C729EB2464362u,
    0xD8F6CD57B3CC1ED8u, 0x6329E52425541577u, 0x62AA688AD5AE1AC0u, 0x0A242566269BF845u,
    0x168B1A4753ACA74Bu, 0xF789AFEFFF2E7E3Cu, 0x6C3362093B6FCCDBu, 0x4CE8F50BD28C09B2u,
    0x006A2DB95AE8AA93u, 0x975B0D623C3D1A8Cu, 0x18605D3935338C5Bu, 0x5BB6F6136CAD3C71u,
    0x0F53A20701F8D8A6u, 0xAB8C5AD2E7E93C67u, 0x40B5AC5127ACAA29u, 0x8C7BF63C2075895Fu,
    0x78BD9F7E014A805Cu, 0xB2C9E9F4F9C8C032u, 0xEFD6049827EB91F3u, 0x2BE459F482C16FBDu,
    0xD92CE0C5745AAA8Cu, 0x0AAA8FB298D965B9u, 0x2B37F92C6C803B15u, 0x8C54A5E94E0F0E78u,
    0x95F9B6E90C0A3032u, 0xE7939FAA436C7874u, 0xD16BFE8F6A8A40C9u, 0x44982B86263FD2FAu,
    0xE285FB39F984E583u, 0x779A8DF72D7619D3u, 0xF2D79A8DE8D5DD1Eu, 0xD1037354D66684E2u,
    0x004C82A4E668A8E5u, 0x31D40A7668B044E6u, 0xD70578538BD02C11u, 0xDB45431078C5F482u,
    0x977121BB7F6A51ADu, 0x73D5CCBD34EFF8DDu, 0xE437A07D356E17CDu, 0x47B2782043C95627u,
    0x9FB251413E41D49Au, 0xCCD70B60652513D3u, 0x1C95B31E8A1B49B2u, 0xCAE73DFD1BCB4C1Bu,
    0x34D98331B1F5B70Fu, 0x784E39F22338D92Fu, 0x18613D4A064DF420u, 0xF1D8DAE25F0BCEBEu,
    0x33F77C15AE855EFCu, 0x3C88B3B912EB109Cu, 0x956A2EC96BAFEEA5u, 0x1AA005B5E0AD0E87u,
    0x5500D70527C4BB8Eu, 0xE36C57196421CC44u, 0x13C4D286CC36EE39u, 0x5654A23D818B2A81u,
    0x77B1DC13D161ABDCu, 0x734F44DE5F8D5EB5u, 0x60717E174A6C89A2u, 0xD47D9649266A211Eu,
    0x5B13A4322BB69E90u, 0xF7669609F8B5FC3Cu, 0x21E6AC55BEDCDAC9u, 0x9B56B62B61166DEAu,
    0xF48F66B939797E9Cu, 0x35F332F9C0E6AE9Au, 0xCC733F6A9A878DB0u, 0x3DA161E41CC108C2u,
    0xB7D74AE535914D51u, 0x4D493B0B11D36469u, 0xCE264D1DFBA9741Au, 0xA9D1F2DC7436DC06u,
    0x70738016604C2A27u, 0x231D36E96E93F3D5u, 0x7666881197838D19u, 0x4A2A83090AAAD40Cu,
    0xF1E761591668B35Du, 0x7363236497F730A7u, 0x301080E37379DD4Du, 0x502DEA2971827042u,
    0xC2C5EB858F32625Fu, 0x786AFB9EDFAFBDFFu, 0xDAEE0D868490B2A4u, 0x617366B3268609F6u,
    0xAE0E35A0FE46173Eu, 0xD1A07DE93E824F11u, 0x079B8B115EA4CCA8u, 0x93A99274558FAEBBu,
    0xFB1E6E22E08A03B3u, 0xEA635FDBA3698DD0u, 0xCF53659328503A5Cu, 0xCDE3B31E6FD5D780u,
    0x8E3E4221D3614413u, 0xEF14D0D86BF1A22Cu, 0xE1D830D3F16C5DDBu, 0xAABD2B2A451504E1u,
};
static uint64_t GEAR_LS[256]; /* GEAR[i] << 1, filled when the module loads */

/* The first position in [a, b) (a and b even) where the gear hash *h, carried from the
 * byte before a, matches the mask m, or b if none; *h is left at b's byte before.
 * pyfastcdc's loop steps two bytes at a time: the hash after an even byte is kept shifted
 * left by one (GEAR_LS) and tested against m << 1, after the odd byte it is the gear hash
 * itself, H(p) = (H(p-1) << 1) + GEAR[buf[p]].
 *
 * That loop waits on its own hash: each step's shift and add need the one before, so a
 * core runs it at ~1 byte a cycle whatever else it could do. H(p) depends only on the 64
 * bytes up to p (older ones are shifted out of the 64 bits), so a second lane can start
 * GEAR_LANE bytes on, 64 bytes early, and from there carry the very hash the first lane
 * would reach: both lanes step in one loop, and the core runs the two chains side by side
 * (1.7x on this project's Xeon). A match in the first lane is the cut; one in the second
 * is the cut once the first lane's whole stretch has none. */
#define GEAR_LANE 4096u

static inline uint64_t
gear_scan(const uint8_t *buf, uint64_t a, uint64_t b, uint64_t *h, uint64_t m)
{
    const uint64_t m1 = m << 1;
    uint64_t x = *h;
    for (; b - a >= 2 * GEAR_LANE + 64; a += 2 * GEAR_LANE) {
        const uint8_t *p = buf + a, *q = buf + a + GEAR_LANE;
        uint64_t y = 0, found = GEAR_LANE; /* the second lane's state and first match */
        for (int i = -64; i < 0; i += 2) /* the 64 bytes before q: in the first stretch */
            y = (y << 2) + GEAR_LS[q[i]] + GEAR[q[i + 1]];
        for (uint64_t i = 0; i < GEAR_LANE; i += 2) {
            x = (x << 2) + GEAR_LS[p[i]];
            y = (y << 2) + GEAR_LS[q[i]];
            if ((x & m1) == 0) {
                *h = x;
                return a + i;
            }
            if ((y & m1) == 0 && found == GEAR_LANE)
                found = i;
            x += GEAR[p[i + 1]];
            y += GEAR[q[i + 1]];
            if ((x & m) == 0) {
                *h = x;
                return a + i + 1;
            }
            if ((y & m) == 0 && found == GEAR_LANE)
                found = i + 1;
        }
        if (found != GEAR_LANE)
            return a + GEAR_LANE + found;
        x = y; /* the hash at the second lane's end: the first lane's from here on */
    }
    for (; a < b; a += 2) { /* what is left: one lane */
        x = (x << 2) + GEAR_LS[buf[a]];
        if ((x & m1) == 0) {
            *h = x;
            return a;
        }
        x += GEAR[buf[a + 1]];
        if ((x & m) == 0) {
            *h = x;
            return a + 1;
        }
    }
    *h = x;
    return b;
}

/* The length of the chunk at the start of buf (len bytes; the whole of it when short). */
static uint64_t
cut_gear(const uint8_t *buf, uint64_t len)
{
    uint64_t remaining = len;
    if (remaining <= MIN_SIZE)
        return remaining;
    uint64_t center = AVG_SIZE;
    if (remaining > MAX_SIZE)
        remaining = MAX_SIZE;
    else if (remaining < center)
        center = remaining;
    const uint64_t mid = (center / 2) * 2, end = (remaining / 2) * 2;
    uint64_t hash = 0, pos;
    pos = gear_scan(buf, (MIN_SIZE / 2) * 2, mid, &hash, MASK_S);
    if (pos < mid)
        return pos;
    pos = gear_scan(buf, mid, end, &hash, MASK_L);
    return pos < end ? pos : remaining;
}

/* BLAKE3 of one prefix byte followed by a chunk, with SIMD across the whole chunk.
 *
 * blake3_hasher_update, given the prefix byte and then the chunk, hashes BLAKE3's first
 * 1 KiB chunk alone and then, the chunk counter being odd, subtrees of 1, 2 and 4 KiB
 * before it reaches 8 chunks at a time: a tenth of every 64 KiB is hashed without AVX2.
 * Here the 1 KiB chunks are handed to blake3_hash_many as a list of pointers (the first
 * from a copy that holds the prefix byte), all at once, and the parent nodes are reduced
 * level by level the same way. Pairing neighbours at each level and carrying an odd last
 * node up gives BLAKE3's tree: the left subtree of every node holds the largest power of
 * two of chunks that leaves one for the right. Inputs of one chunk or less take the
 * plain hasher. */
#define CHUNKS_MAX (MAX_SIZE / BLAKE3_CHUNK_LEN + 1) /* of a prefixed chunk of MAX_SIZE */

struct scratch {
    const uint8_t *inputs[CHUNKS_MAX];
    uint8_t cvs[2][CHUNKS_MAX * BLAKE3_OUT_LEN];
    uint8_t first[BLAKE3_CHUNK_LEN];
    /* blake3_hash_many's assembly loads the first input of a group of 2 or 4 with one 32-
     * or 64-byte load where it needs 16 bytes (AVX2, AVX-512), reading up to 48 bytes
     * past that input's end: harmless where, as in BLAKE3's own callers, more input
     * follows. ``first`` is such an input with nothing after it, so these bytes are read
     * instead of whatever lies past the allocation (an unmapped page, once: SIGSEGV). */
    uint8_t overread[64];
};

static void
hash_prefixed(uint8_t kind, const uint8_t *data, size_t n, uint8_t out[BLAKE3_OUT_LEN],
              struct scratch *s)
{
    const size_t len = n + 1, chunks = (len + BLAKE3_CHUNK_LEN - 1) / BLAKE3_CHUNK_LEN;
    if (chunks < 2 || chunks > CHUNKS_MAX) {
        blake3_hasher hasher;
        blake3_hasher_init(&hasher);
        blake3_hasher_update(&hasher, &kind, 1);
        blake3_hasher_update(&hasher, data, n);
        blake3_hasher_finalize(&hasher, out, BLAKE3_OUT_LEN);
        return;
    }
    const size_t last = len - (chunks - 1) * BLAKE3_CHUNK_LEN; /* 1 to BLAKE3_CHUNK_LEN */
    const size_t whole = last == BLAKE3_CHUNK_LEN ? chunks : chunks - 1;
    uint8_t *cv = s->cvs[0], *next = s->cvs[1];
    s->first[0] = kind;
    memcpy(s->first + 1, data, BLAKE3_CHUNK_LEN - 1);
    s->inputs[0] = s->first;
    for (size_t i = 1; i < whole; i++)
        s->inputs[i] = data + i * BLAKE3_CHUNK_LEN - 1;
    blake3_hash_many(s->inputs, whole, BLAKE3_CHUNK_LEN / BLAKE3_BLOCK_LEN, IV, 0, true, 0,
                     CHUNK_START, CHUNK_END, cv);
    if (whole < chunks) { /* the short last chunk, block by block */
        const uint8_t *p = data + (chunks - 1) * BLAKE3_CHUNK_LEN - 1;
        const size_t blocks = (last + BLAKE3_BLOCK_LEN - 1) / BLAKE3_BLOCK_LEN;
        uint32_t words[8];
        uint8_t block[BLAKE3_BLOCK_LEN];
        memcpy(words, IV, sizeof words);
        for (size_t b = 0; b < blocks; b++) {
            const uint8_t *src = p + b * BLAKE3_BLOCK_LEN;
            size_t size = BLAKE3_BLOCK_LEN;
            uint8_t flags = b == 0 ? CHUNK_START : 0;
            if (b == blocks - 1) {
                size = last - b * BLAKE3_BLOCK_LEN;
                memset(block, 0, sizeof block);
                memcpy(block, src, size);
                src = block;
                flags |= CHUNK_END;
            }
            blake3_compress_in_place(words, src, (uint8_t)size, chunks - 1, flags);
        }
        store_cv_words(cv + (chunks - 1) * BLAKE3_OUT_LEN, words);
    }
    size_t count = chunks;
    while (count > 2) {
        const size_t pairs = count / 2;
        for (size_t i = 0; i < pairs; i++)
            s->inputs[i] = cv + i * 2 * BLAKE3_OUT_LEN;
        blake3_hash_many(s->inputs, pairs, 1, IV, 0, false, PARENT, 0, 0, next);
        if (count & 1)
            memcpy(next + pairs * BLAKE3_OUT_LEN, cv + (count - 1) * BLAKE3_OUT_LEN,
                   BLAKE3_OUT_LEN);
        count = pairs + (count & 1);
        uint8_t *t = cv;
        cv = next;
        next = t;
    }
    uint32_t root[8];
    memcpy(root, IV, sizeof root);
    blake3_compress_in_place(root, cv, BLAKE3_BLOCK_LEN, 0, PARENT | ROOT);
    store_cv_words(out, root);
}

/* Cut while pos < stop; hash the chunks that start at skip or later. Sets *first to where
 * the first of those starts (the first cut at or after skip) and returns how many there
 * are (at most cap). */
static Py_ssize_t
cut_hash_all(const uint8_t *buf, uint64_t len, uint64_t stop, uint64_t skip, uint8_t kind,
             uint64_t *first, uint64_t *ends, uint8_t *ids, Py_ssize_t cap,
             struct scratch *scratch)
{
    uint64_t pos = 0;
    Py_ssize_t n = 0;
    while (pos < skip && pos < len)
        pos += cut_gear(buf + pos, len - pos);
    *first = pos;
    while (pos < stop && n < cap) {
        uint64_t size = cut_gear(buf + pos, len - pos);
        hash_prefixed(kind, buf + pos, (size_t)size, ids + (size_t)n * ID_LEN, scratch);
        pos += size;
        ends[n++] = pos;
    }
    return n;
}

/* Nonzero, with ValueError set, unless ``kind`` (the object type prefixed to what is
 * hashed) is a byte. */
static int
bad_kind(int kind)
{
    if (kind >= 0 && kind <= 255)
        return 0;
    PyErr_Format(PyExc_ValueError, "kind is %d: it must be a byte (0 to 255)", kind);
    return 1;
}

/* Nonzero, with ValueError set, unless ``ids`` holds a whole number of 32-byte ids. */
static int
bad_ids(const Py_buffer *ids)
{
    if (ids->len % ID_LEN == 0)
        return 0;
    PyErr_SetString(PyExc_ValueError, "ids is not a whole number of 32-byte ids");
    return 1;
}

static PyObject *
cut_hash(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t stop, skip = 0;
    int kind;
    if (!PyArg_ParseTuple(args, "y*ni|n:cut_hash", &view, &stop, &kind, &skip))
        return NULL;
    PyObject *ends_list = NULL, *ids = NULL, *result = NULL;
    uint64_t *ends = NULL, first = 0;
    struct scratch *scratch = NULL;
    if (stop < 0 || stop > view.len || skip < 0 || skip > stop) {
        PyErr_Format(PyExc_ValueError, "skip %zd and stop %zd: 0 <= skip <= stop <= %zd (the "
                     "buffer's length) must hold", skip, stop, view.len);
        goto done;
    }
    if (bad_kind(kind))
        goto done;
    /* Every chunk but the buffer's last is at least MIN_SIZE bytes, and the kept ones
     * start at skip or later and before stop. */
    Py_ssize_t cap = (stop - skip) / MIN_SIZE + 2, n;
    ends = PyMem_RawMalloc((size_t)cap * sizeof *ends);
    ids = PyBytes_FromStringAndSize(NULL, cap * ID_LEN);
    scratch = PyMem_RawMalloc(sizeof *scratch);
    if (ends == NULL || ids == NULL || scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(ids);
    Py_BEGIN_ALLOW_THREADS
    n = cut_hash_all((const uint8_t *)view.buf, (uint64_t)view.len, (uint64_t)stop,
                     (uint64_t)skip, (uint8_t)kind, &first, ends, out, cap, scratch);
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&ids, n * ID_LEN) < 0)
        goto done;
    ends_list = PyList_New(n);
    if (ends_list == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *end = PyLong_FromUnsignedLongLong(ends[i]);
        if (end == NULL)
            goto done;
        PyList_SET_ITEM(ends_list, i, end);
    }
    result = Py_BuildValue("KOO", (unsigned long long)first, ends_list, ids);
done:
    Py_XDECREF(ends_list);
    Py_XDECREF(ids);
    PyMem_RawFree(ends);
    PyMem_RawFree(scratch);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
object_id(PyObject *self, PyObject *args)
{
    int kind;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*:object_id", &kind, &view))
        return NULL;
    PyObject *result = NULL;
    struct scratch *scratch = NULL;
    if (bad_kind(kind))
        goto done;
    scratch = PyMem_RawMalloc(sizeof *scratch);
    result = PyBytes_FromStringAndSize(NULL, ID_LEN);
    if (scratch == NULL || result == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    if (view.len >= 4096) {
        Py_BEGIN_ALLOW_THREADS
        hash_prefixed((uint8_t)kind, view.buf, (size_t)view.len, out, scratch);
        Py_END_ALLOW_THREADS
    } else {
        hash_prefixed((uint8_t)kind, view.buf, (size_t)view.len, out, scratch);
    }
done:
    PyMem_RawFree(scratch);
    PyBuffer_Release(&view);
    return result;
}

/* object_ids(kind, buf, ends, expect=None) -> bytes: the ids of the spans buf[0:ends[0]],
 * buf[ends[0]:ends[1]], ... (consecutive chunks whose cut points are known already),
 * 32 bytes each, in one call without the GIL. With ``expect`` (32 bytes an end), the
 * ids up to the first that differs from its expected one, included: a new version's
 * bytes past an edit are not hashed. */
static PyObject *
object_ids(PyObject *self, PyObject *args)
{
    int kind;
    Py_buffer view, want = {0};
    PyObject *ends_obj, *expect_obj = Py_None;
    if (!PyArg_ParseTuple(args, "iy*O|O:object_ids", &kind, &view, &ends_obj, &expect_obj))
        return NULL;
    if (expect_obj != Py_None && PyObject_GetBuffer(expect_obj, &want, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *result = NULL, *seq = NULL;
    struct scratch *scratch = NULL;
    uint64_t *ends = NULL;
    if (bad_kind(kind))
        goto done;
    seq = PySequence_Fast(ends_obj, "ends must be a sequence of offsets");
    if (seq == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (want.obj != NULL && want.len != n * ID_LEN) {
        PyErr_Format(PyExc_ValueError, "expect holds %zd bytes: %zd ends need %zd", want.len,
                     n, n * ID_LEN);
        goto done;
    }
    ends = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof *ends);
    scratch = PyMem_RawMalloc(sizeof *scratch);
    result = PyBytes_FromStringAndSize(NULL, n * ID_LEN);
    if (ends == NULL || scratch == NULL || result == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    uint64_t prev = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long e = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (e == (unsigned long long)-1 && PyErr_Occurred()) {
            Py_CLEAR(result);
            goto done;
        }
        if (e < prev || e > (unsigned long long)view.len) {
            PyErr_Format(PyExc_ValueError, "ends[%zd] is %llu: the ends must rise and lie "
                         "within the buffer's %zd bytes", i, e, view.len);
            Py_CLEAR(result);
            goto done;
        }
        ends[i] = prev = e;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t *buf = (const uint8_t *)view.buf;
    const uint8_t *expect = want.obj != NULL ? (const uint8_t *)want.buf : NULL;
    Py_ssize_t hashed = n;
    Py_BEGIN_ALLOW_THREADS
    uint64_t start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t *id = out + (size_t)i * ID_LEN;
        hash_prefixed((uint8_t)kind, buf + start, (size_t)(ends[i] - start), id, scratch);
        start = ends[i];
        if (expect != NULL && memcmp(id, expect + (size_t)i * ID_LEN, ID_LEN) != 0) {
            hashed = i + 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (hashed < n && _PyBytes_Resize(&result, hashed * ID_LEN) < 0)
        result = NULL;
done:
    Py_XDECREF(seq);
    PyMem_RawFree(ends);
    PyMem_RawFree(scratch);
    PyBuffer_Release(&view);
    if (want.obj != NULL)
        PyBuffer_Release(&want);
    return result;
}

/* The filter block of an id among ``blocks`` (its bytes 0-3, big-endian, scaled) and
 * the word whose 9-bit groups are its 7 bits there (bytes 8-15, little-endian):
 * docs/format.md section 5.1. */
static inline const uint8_t *
filter_spot(const uint8_t *filter, uint64_t blocks, const uint8_t *id, uint64_t *word)
{
    uint64_t top = ((uint64_t)id[0] << 24) | ((uint64_t)id[1] << 16) | ((uint64_t)id[2] << 8) |
                   (uint64_t)id[3];
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | id[8 + k];
    *word = v;
    return filter + 64u * ((top * blocks) >> 32);
}

/* screen(buf, offset, blocks, ids) -> bytes: for each 32-byte id of ids, 1 if the
 * blocked Bloom filter of a version-2 multi-pack index (docs/format.md section 5.1;
 * blocks blocks of 64 bytes at offset in buf) may hold it, else 0. The block is picked
 * by the id's bytes 0-3 (big-endian, times blocks, >> 32), its 7 bits by the 9-bit
 * fields of bytes 8-15 (little-endian, lowest first); bit i of a block is bit i % 8 of
 * its byte i / 8. Without the GIL for many ids (the filter's pages may fault in). */
static void
screen_ids(const uint8_t *filter, uint64_t blocks, const uint8_t *ids, Py_ssize_t n, uint8_t *out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t v;
        const uint8_t *block = filter_spot(filter, blocks, ids + (size_t)ID_LEN * (size_t)i, &v);
        uint8_t hit = 1;
        for (int k = 0; k < 7 && hit; k++) {
            unsigned bit = (unsigned)(v & 511u);
            v >>= 9;
            hit = (block[bit >> 3] >> (bit & 7)) & 1u;
        }
        out[i] = hit;
    }
}

static PyObject *
screen(PyObject *self, PyObject *args)
{
    Py_buffer buf, ids;
    Py_ssize_t offset;
    unsigned long long blocks;
    if (!PyArg_ParseTuple(args, "y*nKy*:screen", &buf, &offset, &blocks, &ids))
        return NULL;
    PyObject *result = NULL;
    if (bad_ids(&ids))
        goto done;
    if (blocks == 0 || blocks >= (1ull << 32) || offset < 0 || offset > buf.len ||
        (unsigned long long)(buf.len - offset) / 64u < blocks) {
        PyErr_SetString(PyExc_ValueError, "the filter does not lie inside the buffer");
        goto done;
    }
    Py_ssize_t n = ids.len / ID_LEN;
    result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL)
        goto done;
    const uint8_t *filter = (const uint8_t *)buf.buf + offset;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    if (n >= 64) {
        Py_BEGIN_ALLOW_THREADS
        screen_ids(filter, blocks, ids.buf, n, out);
        Py_END_ALLOW_THREADS
    } else {
        screen_ids(filter, blocks, ids.buf, n, out);
    }
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ids);
    return result;
}

/* Set the filter bits of each id in ``filter`` (``blocks`` 64-byte blocks): the block
 * and the 7 bits screen_ids tests. */
static PyObject *
filter_add(PyObject *self, PyObject *args)
{
    Py_buffer buf, ids;
    unsigned long long blocks;
    if (!PyArg_ParseTuple(args, "w*Ky*:filter_add", &buf, &blocks, &ids))
        return NULL;
    PyObject *result = NULL;
    if (bad_ids(&ids))
        goto done;
    if (blocks == 0 || blocks >= (1ull << 32) || (unsigned long long)buf.len / 64u != blocks ||
        buf.len % 64) {
        PyErr_SetString(PyExc_ValueError, "the filter is not blocks 64-byte blocks");
        goto done;
    }
    uint8_t *filter = (uint8_t *)buf.buf;
    for (Py_ssize_t i = 0; i < ids.len / ID_LEN; i++) {
        uint64_t v;
        uint8_t *block = (uint8_t *)filter_spot(
            filter, blocks, (const uint8_t *)ids.buf + (size_t)ID_LEN * (size_t)i, &v);
        for (int k = 0; k < 7; k++) {
            unsigned bit = (unsigned)(v & 511u);
            v >>= 9;
            block[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        }
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&ids);
    return result;
}

/* Positions of ids among ``count`` sorted ids at ``ids`` (a multi-pack index's id
 * column, docs/format.md section 5.1): binary search within each id's fan-out bucket
 * (``fan``: 257 bounds); -1 where absent. */
static void
find_ids(const uint8_t *ids, const int64_t *fan, const uint8_t *needles, Py_ssize_t n,
         int64_t *out)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint8_t *id = needles + (size_t)ID_LEN * (size_t)i;
        int64_t lo = fan[id[0]], hi = fan[id[0] + 1], end = hi;
        while (lo < hi) {
            int64_t mid = lo + ((hi - lo) >> 1);
            if (memcmp(ids + (size_t)ID_LEN * (size_t)mid, id, ID_LEN) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        out[i] = lo < end && !memcmp(ids + (size_t)ID_LEN * (size_t)lo, id, ID_LEN) ? lo : -1;
    }
}

static PyObject *
find(PyObject *self, PyObject *args)
{
    Py_buffer buf, fanbuf, ids;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "y*ny*y*:find", &buf, &offset, &fanbuf, &ids))
        return NULL;
    PyObject *result = NULL;
    int64_t fan[257];
    if (bad_ids(&ids))
        goto done;
    if (fanbuf.len != (Py_ssize_t)sizeof fan) {
        PyErr_SetString(PyExc_ValueError, "fan is not 257 native int64 bounds");
        goto done;
    }
    memcpy(fan, fanbuf.buf, sizeof fan);
    int sound = fan[0] == 0 && offset >= 0 && offset <= buf.len;
    for (int b = 0; b < 256 && sound; b++)
        sound = fan[b] <= fan[b + 1];
    if (!sound || fan[256] > (buf.len - offset) / ID_LEN) {
        PyErr_SetString(PyExc_ValueError, "the ids do not lie inside the buffer");
        goto done;
    }
    Py_ssize_t n = ids.len / ID_LEN;
    result = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (result == NULL)
        goto done;
    const uint8_t *col = (const uint8_t *)buf.buf + offset;
    int64_t *out = (int64_t *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS /* (the mapping's pages may have to be read from disk) */
    find_ids(col, fan, ids.buf, n, out);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&buf);
    PyBuffer_Release(&fanbuf);
    PyBuffer_Release(&ids);
    return result;
}

static PyMethodDef methods[] = {
    {"screen", screen, METH_VARARGS,
     "screen(buf, offset, blocks, ids) -> bytes: 1 for each 32-byte id of ids that the "
     "multi-pack index filter of blocks 64-byte blocks at offset in buf may hold, else 0 "
     "(docs/format.md section 5.1)."},
    {"filter_add", filter_add, METH_VARARGS,
     "filter_add(filter, blocks, ids) -> None: set in filter (a writable buffer of blocks "
     "64-byte blocks) the bits of each 32-byte id of ids that screen tests."},
    {"find", find, METH_VARARGS,
     "find(buf, offset, fan, ids) -> bytes: for each 32-byte id of ids, its position (a "
     "native int64, -1 if absent) among the sorted ids at offset in buf, searched within "
     "its fan-out bucket (fan: 257 native int64 bounds, as bytes). Runs without the GIL."},
    {"cut_hash", cut_hash, METH_VARARGS,
     "cut_hash(buf, stop, kind, skip=0) -> (first, ends, ids): cut buf with FastCDC from "
     "its start while the next chunk starts before stop, and hash the chunks that start at "
     "skip or later: first is where the first of them starts, ends[i] the offset just past "
     "chunk i of them, ids[32 * i : 32 * i + 32] the BLAKE3 hash of bytes((kind,)) + chunk "
     "i. Runs without the GIL."},
    {"object_ids", object_ids, METH_VARARGS,
     "object_ids(kind, buf, ends, expect=None) -> bytes: the object ids (32 bytes each) of "
     "the spans buf[0:ends[0]], buf[ends[0]:ends[1]], ..., hashed in one call without the "
     "GIL; with expect (32 bytes for each end), only up to the first id that differs from "
     "its expected one, that id included."},
    {"object_id", object_id, METH_VARARGS,
     "object_id(kind, data) -> bytes: the BLAKE3 hash of bytes((kind,)) + data, without the "
     "GIL from 4 KiB on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "modelvault._cdc",
    "FastCDC cut points and BLAKE3 chunk ids, compiled (optional: pyfastcdc and blake3 do "
    "it otherwise).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__cdc(void)
{
    for (int i = 0; i < 256; i++)
        GEAR_LS[i] = GEAR[i] << 1;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MIN_SIZE", MIN_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "AVG_SIZE", AVG_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SIZE", MAX_SIZE) < 0 ||
        PyModule_AddStringConstant(m, "BLAKE3_VERSION", blake3_version()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
