# ssproto.channel (AES-CCM channel) under the interpreter that runs it: known answers made
# with `cryptography` on the host, over cryptolib's AES-ECB under MicroPython and over
# cryptography's under CPython (channel.default_ecb picks).  Random cross-checks against
# cryptography's AESCCM, many lengths, are in tests/test_channel.py.
from mpyunit import eq, raises, run, test

from ssproto import channel
from ssproto.channel import Channel, ChannelError

# (key, nonce, aad, plaintext, tag length, ciphertext||tag): made with cryptography's AESCCM
CCM_KATS = (
    ("47b9f97baded0e1dc630b37012ec103f", "a2dd732f5b3052b2d4353e73d3",
     "",
     "", 16,
     "c76491ae39b63a324ba485d8dd4c6481"),
    ("238697dcca89a0935f70f6bf693a74e8", "80cbbfad82f954141f0845c0bf",
     "",
     "d1", 16,
     "0b6d9d6dedb0368e7e2d94354306e3c016"),
    ("cc0ab2676bdf2521acf6e66c7ef1ba8e", "033a29903a3b3c7715f6bd2c49",
     "2b80f74b62",
     "6396d79524c71fba33900b7c14b993ec", 16,
     "6274b59f8a419fc8d633dd868f41f9dc2d388ef11ee104072c064756bd9e6462"),
    ("1e03a33bdf19d2df1f0057cb97dea822", "b692b74b6b57a6",
     "",
     "a4b1a6f881112a145cfec1d1f600f514ad", 8,
     "87815ac4b2aefa7bafe4c92905d5dbb2071847a6d7925c35d8"),
    ("f450f8d3026c67fe294570ab80d0238196b6d1c367ff1df3a7533e8e9099d8d9", "587ab08b7666e58f959bf82d",
     "aa2e424cfa10855b0f40290d7075d6ee70cf165c",
     "91bc5a87058c4f94a94400752671eeb49302e8b0b82a339266e25560fdba0aee4a", 4,
     "9fd181ccf00c9ec9b089ee2a0b9da4f6da0119ed11ecce67f8b031957fdecdf7494c4d1f51"),
    ("3409443f25ac18a314ee2467d7925adb", "8cb5e13f22f22d3e2956368de3",
     "f5edc4e2f894f503ceaa99bafdf2b17d",
     "c50d9b9fab2e23f67c6879428d53c5168d7d538e91768034537a749891f19b14c4d3a3ae1c04e53f80769373664bc142", 16,
     ("cbd6acbf92be09b7d1b16145b0a178e3fd39978b24eda2015766f81a66076af001415391114c5a97c856754a2dc1b54e"
      "c32060b816358a6f7bca4c59fb3b3d29")),
    ("8a913cf4a7e022fc6e4d53d184d10ad2fb08105a0829dd3f107bc68904d12ac4", "962c09ae46c07000024d7fa414",
     "ffa7d5145521a66a5bcd5c6695b79714a8156a90b6d95ada3fc5378d44e3b8692c928f9a8a55c09c",
     ("ff72d220c26c173e70d6a853c5d0f15fb19b863e178a0b8864a692473b56b466fed24b21534bbcb038224276b0cde44b"
      "8f834fb529bcf1b58600633a9c5b759f7a99b700cc78"), 12,
     ("c6b2b9294e5058ee94679d0f9e597d003d23094656a2b76e745095c7698f490389f1ddddfa8c5bd5439a2748221ac921"
      "92810fcaa8457272e86d14c0586f9fcd9eb6b2e602a0eace1e9d90f4b56ca179d067")),
    ("19b28efcb79b01d4e8b5e4949ff7511e", "e72c0524a3e5c1b4888edf",
     "18",
     ("ab121368a4b34b549eb1b9aeab80b6c9d94a9e6d13540563acd6583cdf7d7dc70404153031cb005acea5d03a21cf38af"
      "bc9689deed57ca9d6f6c16f004f7d1a31547ca10c64f28504c92addfb98d961453d6606f5290836b09c113d6153b393b"
      "7004b9ee8cc02ba52d24114cc52810daeea6da87ec2d52a292f70acfbc41ab82720d401cabf53f98e641385c6cbd0069"
      "2cf7cd65f5ecc39ae8d48135b7ea4a1b93ba055953e405383ef98f6e4f900859e71794c706341acbdfa81ca4c30be79b"
      "5269a2c7384c6bbb12be098bd044efda174262f4ff07369c3ada7955c83925b7eef544378ebec7626c853f7fe3192711"
      "a17e0103ec867f32ba5bf56babe01d"), 14,
     ("d3fc1e5b11a3ab9648e4bb381ab866d7df2ff04dbf5fff88711bc0064d87bea272bffc028cbd865976c5f7be2264728e"
      "0541d727adbf67df709033871879eeea8404487a23f79db166dc4dc1e6d587172081a06b62b84395ba471fd4ba4953d2"
      "c4ad084906a40f1c375243da73b34ebb1efeae74c7bde3e84c2b6e686b90de0c04aea9fbbb61200291b9c282b3082bf4"
      "eae583e9114fb67cd08e0cb161be9b35a0d4b4ebf9469c82202ec7ddf9148f6c31e54de247bc473f0a8aeffa4b23c4ba"
      "c8e1a7bfb01b60ad9931d628348592f1f0a948a4416dc5e4b750e0c0d59f6fcc9d7cead2c502acee36598e2f05dabdde"
      "0b3e965c055ac0142956587432cbf6c34cec64c6b572831bf032c36262")),
)
# a K_shared, and frames 0 and 1 host->device and frame 0 device->host, made with cryptography
K_SHARED = "bb1642896ef22c54f6685bdcc734a9f648017767edf38120d64eb0254a205a46"
FRAMES = (
    (b"provision_set wifi_ssid Lab",
     "0000000028663916d10a75055e01d624e3a21383aeb4dbb6b9b3c744dd2e964b275b633c5858adcccdab2cec8a1c30"),
    (b"", "00000001528fba013a0127a4aa2bfaf77c1f4118"),
    (b"x" * 40,
     ("000000000d72f5624bd0c3ce6a9aacac84fc8d9c18d6ed51e8f387f000081f89a59817f61a7dc3d747ae3d66f53d45f2"
      "26894874ba8c6bed6a770f22")),
)


def h(s):
    return bytes.fromhex(s)


@test
def test_ccm_known_answers():
    for k, n, a, d, tl, ct in CCM_KATS:
        ecb = channel.default_ecb(h(k))
        eq(channel.ccm_encrypt(ecb, h(n), h(d), h(a), tl), h(ct), "encrypt %d bytes" % (len(d) // 2))
        eq(channel.ccm_decrypt(ecb, h(n), h(ct), h(a), tl), h(d), "decrypt")
        bad = bytearray(h(ct))
        bad[-1] ^= 1
        eq(channel.ccm_decrypt(ecb, h(n), bytes(bad), h(a), tl), None, "tampered tag")
        if a:
            eq(channel.ccm_decrypt(ecb, h(n), h(ct), h(a)[1:], tl), None, "other aad")


@test
def test_channel_known_frames():
    host = Channel(h(K_SHARED), False)
    dev = Channel(h(K_SHARED), True)
    eq(host.seal(FRAMES[0][0]), h(FRAMES[0][1]), "frame 0 host->device")
    eq(host.seal(FRAMES[1][0]), h(FRAMES[1][1]), "frame 1 host->device (empty)")
    eq(dev.open(h(FRAMES[0][1])), FRAMES[0][0], "device opens 0")
    eq(dev.open(h(FRAMES[1][1])), FRAMES[1][0], "device opens 1")
    eq(dev.seal(FRAMES[2][0]), h(FRAMES[2][1]), "frame 0 device->host")
    eq(host.open(h(FRAMES[2][1])), FRAMES[2][0], "host opens")


@test
def test_a_seal_that_ran_out_of_memory_uses_no_counter():
    # The device's heap runs out while it encrypts (a fragmented heap, ss_ble): nothing was
    # sent, so the next frame must carry the counter the host expects.  (Before, seal counted
    # first: the host refused the next frame as "lost or reordered", which it reported as a
    # message that failed authentication.)
    host = Channel(h(K_SHARED), False)
    dev = Channel(h(K_SHARED), True)
    real = channel.ccm_encrypt

    def no_memory(*a, **kw):
        raise MemoryError("memory allocation failed")

    channel.ccm_encrypt = no_memory
    try:
        raises(MemoryError, dev.seal, b"status")
    finally:
        channel.ccm_encrypt = real
    eq(dev.seal(FRAMES[2][0]), h(FRAMES[2][1]), "the next frame carries counter 0")
    eq(host.open(h(FRAMES[2][1])), FRAMES[2][0], "and opens")
    eq(host.open(dev.seal(b"next")), b"next", "the counter moves on after a frame made")


@test
def test_replay_refused_and_channel_dies():
    dev = Channel(h(K_SHARED), True)
    dev.open(h(FRAMES[0][1]))
    e = raises(ChannelError, dev.open, h(FRAMES[0][1]))
    assert "expected 1" in str(e)
    assert dev.dead
    raises(ChannelError, dev.open, h(FRAMES[1][1]))  # the right next frame: too late
    raises(ChannelError, dev.seal, b"x")


@test
def test_reorder_refused():
    dev = Channel(h(K_SHARED), True)
    raises(ChannelError, dev.open, h(FRAMES[1][1]))
    raises(ChannelError, dev.open, h(FRAMES[0][1]))


@test
def test_tamper_refused():
    for i in (0, 4, 10, -1):
        dev = Channel(h(K_SHARED), True)
        bad = bytearray(h(FRAMES[0][1]))
        bad[i] ^= 0x80
        raises(ChannelError, dev.open, bytes(bad))
        assert dev.dead
    raises(ChannelError, Channel(h(K_SHARED), True).open, h(FRAMES[0][1])[:19])
    # the host's own frame reflected back to it: wrong key and direction
    raises(ChannelError, Channel(h(K_SHARED), False).open, h(FRAMES[0][1]))


@test
def test_wrong_key_refused():
    other = bytearray(h(K_SHARED))
    other[0] ^= 1
    raises(ChannelError, Channel(bytes(other), True).open, h(FRAMES[0][1]))


run()
