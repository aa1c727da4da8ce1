// Conformance checks of a PKCS#11 module through the JDK's SunPKCS11 provider.
//
// Usage: java CksConformance.java <sunpkcs11.cfg> <user-pin>
//   (or javac + java CksConformance ...)
//
// Expects the token to hold (made by conformance/java.sh with pkcs11-tool/openssl):
//   "java-ec"     EC P-256 key pair + a self-signed certificate with the same CKA_ID/label
//   "java-nocert" EC P-256 key pair without certificate
//   "java-aes"    AES-256 token secret key
//   "java-hmac"   32-byte generic secret token key
//
// Prints one "PASS java/<name>" or "FAIL java/<name>: <reason>" line per check.

import java.security.*;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.security.spec.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;
import javax.crypto.*;
import javax.crypto.spec.*;

public class CksConformance {
    static int passed = 0, failed = 0;
    static Provider p;
    static KeyStore ks;

    interface Check { void run() throws Exception; }

    static synchronized void pass(String name) { passed++; System.out.println("PASS java/" + name); }

    static synchronized void fail(String name, String reason) {
        failed++;
        System.out.println("FAIL java/" + name + ": " + reason.replace('\n', ' '));
    }

    static void check(String name, Check c) {
        try {
            c.run();
            pass(name);
        } catch (Throwable t) {
            StringBuilder sb = new StringBuilder(t.toString());
            for (Throwable cause = t.getCause(); cause != null; cause = cause.getCause())
                sb.append(" <- ").append(cause);
            fail(name, sb.toString());
            if (System.getenv("JAVA_TRACE") != null) t.printStackTrace(System.out);
        }
    }

    static void require(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static byte[] random(int n) {
        byte[] b = new byte[n];
        new SecureRandom().nextBytes(b);
        return b;
    }

    /** Public key re-encoded for the JDK's software providers (cross-checks). */
    static PublicKey soft(PublicKey k) throws Exception {
        return KeyFactory.getInstance(k.getAlgorithm().equals("EC") ? "EC" : "RSA", k.getAlgorithm().equals("EC") ? "SunEC" : "SunRsaSign")
                .generatePublic(new X509EncodedKeySpec(k.getEncoded()));
    }

    static byte[] sign(String alg, AlgorithmParameterSpec spec, PrivateKey k, byte[] data) throws Exception {
        Signature s = Signature.getInstance(alg, p);
        if (spec != null) s.setParameter(spec);
        s.initSign(k);
        s.update(data);
        return s.sign();
    }

    static boolean verify(String alg, AlgorithmParameterSpec spec, PublicKey k, byte[] data, byte[] sig, String provider) throws Exception {
        Signature s = provider == null ? Signature.getInstance(alg, p) : Signature.getInstance(alg, provider);
        if (spec != null) s.setParameter(spec);
        s.initVerify(k);
        s.update(data);
        return s.verify(sig);
    }

    static void signCheck(String name, String alg, AlgorithmParameterSpec spec, KeyPair kp, String softProvider) {
        check(name, () -> {
            byte[] data = random(777);
            byte[] sig = sign(alg, spec, kp.getPrivate(), data);
            require(verify(alg, spec, kp.getPublic(), data, sig, null), "token verify failed");
            require(verify(alg, spec, soft(kp.getPublic()), data, sig, softProvider), softProvider + " verify failed");
            data[0] ^= 1;
            require(!verify(alg, spec, kp.getPublic(), data, sig, null), "token verified a signature over other data");
        });
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: CksConformance <sunpkcs11.cfg> <pin>");
            System.exit(2);
        }
        char[] pin = args[1].toCharArray();

        check("provider-configure", () -> {
            p = Security.getProvider("SunPKCS11").configure(args[0]);
            Security.addProvider(p);
            require(p.getName().equals("SunPKCS11-cks"), "provider name " + p.getName());
        });
        if (p == null) { summary(); return; }

        // Services SunPKCS11 registered: it derives them from C_GetMechanismList/C_GetMechanismInfo.
        String[][] services = {
            {"Signature", "SHA256withECDSA"}, {"Signature", "SHA256withRSA"}, {"Signature", "RSASSA-PSS"},
            {"Signature", "SHA256withRSASSA-PSS"}, {"KeyPairGenerator", "EC"}, {"KeyPairGenerator", "RSA"},
            {"KeyGenerator", "AES"}, {"Cipher", "AES/GCM/NoPadding"}, {"Cipher", "AES/CBC/PKCS5Padding"},
            {"Mac", "HmacSHA256"}, {"KeyStore", "PKCS11"}, {"SecureRandom", "PKCS11"},
        };
        for (String[] s : services) {
            check("service/" + s[0] + "/" + s[1], () ->
                require(p.getService(s[0], s[1]) != null, "provider does not offer " + s[0] + " " + s[1]));
        }

        check("keystore-load-login", () -> {
            ks = KeyStore.getInstance("PKCS11", p);
            ks.load(null, pin);
        });
        if (ks == null) { summary(); return; }

        // ------------------------------------------------------------ KeyStore contents
        check("keystore-alias-with-certificate", () -> {
            List<String> aliases = Collections.list(ks.aliases());
            require(aliases.contains("java-ec"), "aliases " + aliases + " lack java-ec");
            require(ks.isKeyEntry("java-ec"), "java-ec is not a key entry");
            Certificate c = ks.getCertificate("java-ec");
            require(c instanceof X509Certificate, "no certificate for java-ec");
            require(((X509Certificate) c).getSubjectX500Principal().getName().contains("CN=cks-java"), "subject " + c);
        });
        check("keystore-no-alias-for-key-without-certificate", () -> {
            List<String> aliases = Collections.list(ks.aliases());
            require(!aliases.contains("java-nocert") || ks.getCertificate("java-nocert") == null,
                    "java-nocert listed with a certificate");
            require(!ks.isKeyEntry("java-nocert") || ks.getKey("java-nocert", null) instanceof SecretKey == false,
                    "unexpected entry");
        });
        check("keystore-private-key-signs", () -> {
            PrivateKey k = (PrivateKey) ks.getKey("java-ec", null);
            require(k != null, "no private key for java-ec");
            require(k.getAlgorithm().equals("EC"), "algorithm " + k.getAlgorithm());
            byte[] data = random(100);
            byte[] sig = sign("SHA256withECDSA", null, k, data);
            require(verify("SHA256withECDSA", null, ks.getCertificate("java-ec").getPublicKey(), data, sig, "SunEC"),
                    "SunEC rejected the signature with the certificate's key");
        });
        check("keystore-sensitive-private-key-getEncoded-null", () -> {
            Key k = ks.getKey("java-ec", null);
            byte[] enc = k.getEncoded();
            require(enc == null, "getEncoded() returned " + (enc == null ? 0 : enc.length) + " bytes");
        });
        check("keystore-token-secret-keys", () -> {
            require(ks.isKeyEntry("java-aes"), "java-aes not in the keystore: " + Collections.list(ks.aliases()));
            Key k = ks.getKey("java-aes", null);
            require(k instanceof SecretKey && k.getAlgorithm().equals("AES"), "java-aes is " + k);
            require(k.getEncoded() == null, "getEncoded() of a sensitive token AES key returned bytes");
        });

        // ------------------------------------------------------------ key pair generation + signatures
        KeyPair[] ec = new KeyPair[2];
        KeyPair[] rsa = new KeyPair[1];
        check("keypairgen-ec-p256", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", p);
            g.initialize(new ECGenParameterSpec("secp256r1"));
            ec[0] = g.generateKeyPair();
            require(((java.security.interfaces.ECPublicKey) ec[0].getPublic()).getParams().getCurve().getField().getFieldSize() == 256, "not P-256");
        });
        check("keypairgen-ec-p384", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", p);
            g.initialize(new ECGenParameterSpec("secp384r1"));
            ec[1] = g.generateKeyPair();
        });
        check("keypairgen-rsa2048", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("RSA", p);
            g.initialize(2048);
            rsa[0] = g.generateKeyPair();
            require(((java.security.interfaces.RSAPublicKey) rsa[0].getPublic()).getModulus().bitLength() == 2048, "not 2048 bits");
        });
        if (ec[0] != null) signCheck("sign-SHA256withECDSA-p256", "SHA256withECDSA", null, ec[0], "SunEC");
        if (ec[1] != null) signCheck("sign-SHA384withECDSA-p384", "SHA384withECDSA", null, ec[1], "SunEC");
        if (ec[1] != null) signCheck("sign-SHA256withECDSA-p384", "SHA256withECDSA", null, ec[1], "SunEC");
        PSSParameterSpec pss = new PSSParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, 32, 1);
        if (rsa[0] != null) {
            signCheck("sign-SHA256withRSA", "SHA256withRSA", null, rsa[0], "SunRsaSign");
            signCheck("sign-RSASSA-PSS", "RSASSA-PSS", pss, rsa[0], "SunRsaSign");
            check("sign-SHA256withRSASSA-PSS", () -> {
                byte[] data = random(300);
                byte[] sig = sign("SHA256withRSASSA-PSS", pss, rsa[0].getPrivate(), data);
                require(verify("RSASSA-PSS", pss, soft(rsa[0].getPublic()), data, sig, "SunRsaSign"), "SunRsaSign verify failed");
            });
            // (SunPKCS11 in JDK 17 offers RSA/ECB/PKCS1Padding but no OAEP cipher.)
            check("decrypt-RSA-PKCS1Padding", () -> {
                byte[] msg = random(64);
                Cipher enc = Cipher.getInstance("RSA/ECB/PKCS1Padding", "SunJCE");
                enc.init(Cipher.ENCRYPT_MODE, soft(rsa[0].getPublic()));
                byte[] ct = enc.doFinal(msg);
                Cipher dec = Cipher.getInstance("RSA/ECB/PKCS1Padding", p);
                dec.init(Cipher.DECRYPT_MODE, rsa[0].getPrivate());
                require(Arrays.equals(dec.doFinal(ct), msg), "RSA PKCS#1 v1.5 round trip mismatch");
            });
        }

        // ------------------------------------------------------------ symmetric
        SecretKey[] aes = new SecretKey[1];
        check("keygen-aes256", () -> {
            KeyGenerator g = KeyGenerator.getInstance("AES", p);
            g.init(256);
            aes[0] = g.generateKey();
            require(aes[0].getAlgorithm().equals("AES"), "algorithm " + aes[0].getAlgorithm());
        });
        List<SecretKey> aesKeys = new ArrayList<>();
        if (aes[0] != null) aesKeys.add(aes[0]);
        try {
            Key k = ks.getKey("java-aes", null);
            if (k instanceof SecretKey) aesKeys.add((SecretKey) k);
        } catch (Exception e) { /* reported by keystore-token-secret-keys */ }
        for (SecretKey key : aesKeys) {
            String kn = key == aes[0] ? "session" : "token";
            check("cipher-AES-GCM-" + kn, () -> {
                for (int len : new int[] {0, 1, 16, 33, 4096}) {
                    byte[] pt = random(len), iv = random(12), aad = random(20);
                    Cipher c = Cipher.getInstance("AES/GCM/NoPadding", p);
                    c.init(Cipher.ENCRYPT_MODE, key, new GCMParameterSpec(128, iv));
                    c.updateAAD(aad);
                    byte[] ct = c.doFinal(pt);
                    require(ct.length == len + 16, "ciphertext length " + ct.length + " for " + len);
                    c = Cipher.getInstance("AES/GCM/NoPadding", p);
                    c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(128, iv));
                    c.updateAAD(aad);
                    require(Arrays.equals(c.doFinal(ct), pt), "round trip mismatch for " + len);
                    ct[ct.length - 1] ^= 1;
                    c = Cipher.getInstance("AES/GCM/NoPadding", p);
                    c.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(128, iv));
                    c.updateAAD(aad);
                    try {
                        c.doFinal(ct);
                        throw new AssertionError("tampered GCM ciphertext accepted (len " + len + ")");
                    } catch (AEADBadTagException expected) {
                    }
                }
            });
            check("cipher-AES-CBC-PKCS5Padding-" + kn, () -> {
                for (int len : new int[] {0, 1, 15, 16, 17, 1000}) {
                    byte[] pt = random(len), iv = random(16);
                    Cipher c = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
                    c.init(Cipher.ENCRYPT_MODE, key, new IvParameterSpec(iv));
                    byte[] ct = c.doFinal(pt);
                    require(ct.length == (len / 16 + 1) * 16, "ciphertext length " + ct.length + " for " + len);
                    c = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
                    c.init(Cipher.DECRYPT_MODE, key, new IvParameterSpec(iv));
                    require(Arrays.equals(c.doFinal(ct), pt), "round trip mismatch for " + len);
                }
            });
            check("cipher-AES-CBC-PKCS5Padding-multipart-" + kn, () -> {
                byte[] pt = random(1000), iv = random(16);
                Cipher c = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
                c.init(Cipher.ENCRYPT_MODE, key, new IvParameterSpec(iv));
                java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
                for (int off = 0; off < pt.length; off += 7) {
                    byte[] part = c.update(pt, off, Math.min(7, pt.length - off));
                    if (part != null) out.write(part);
                }
                out.write(c.doFinal());
                byte[] ct = out.toByteArray();
                c = Cipher.getInstance("AES/CBC/PKCS5Padding", p);
                c.init(Cipher.DECRYPT_MODE, key, new IvParameterSpec(iv));
                out.reset();
                for (int off = 0; off < ct.length; off += 13) {
                    byte[] part = c.update(ct, off, Math.min(13, ct.length - off));
                    if (part != null) out.write(part);
                }
                out.write(c.doFinal());
                require(Arrays.equals(out.toByteArray(), pt), "multi-part round trip mismatch");
            });
        }
        if (aes[0] != null) {
            check("session-aes-key-getEncoded", () -> {
                byte[] enc = aes[0].getEncoded();
                // Not required either way; the line documents what the module does.
                System.out.println("INFO java: KeyGenerator AES session key getEncoded() -> "
                        + (enc == null ? "null (sensitive)" : enc.length + " bytes (extractable)"));
            });
        }

        check("mac-HmacSHA256-token-generic-key", () -> {
            Key k = ks.getKey("java-hmac", null);
            require(k instanceof SecretKey, "java-hmac not found in keystore: " + Collections.list(ks.aliases()));
            require(k.getEncoded() == null, "getEncoded() of a sensitive token key returned bytes");
            byte[] data = random(500);
            Mac m = Mac.getInstance("HmacSHA256", p);
            m.init(k);
            byte[] t1 = m.doFinal(data);
            m.init(k);
            m.update(data, 0, 100);
            m.update(data, 100, 400);
            byte[] t2 = m.doFinal();
            require(t1.length == 32, "tag length " + t1.length);
            require(Arrays.equals(t1, t2), "single-part and multi-part HMAC differ");
        });
        check("mac-HmacSHA256-keygenerator", () -> {
            KeyGenerator g = KeyGenerator.getInstance("HmacSHA256", p);
            g.init(256);
            SecretKey k = g.generateKey();
            Mac m = Mac.getInstance("HmacSHA256", p);
            m.init(k);
            require(m.doFinal(random(64)).length == 32, "bad tag length");
        });
        check("mac-HmacSHA256-imported-key-matches-SunJCE", () -> {
            SecretKeySpec spec = new SecretKeySpec(random(32), "HmacSHA256");
            byte[] data = random(200);
            Mac m = Mac.getInstance("HmacSHA256", p);
            m.init(spec);
            Mac ref = Mac.getInstance("HmacSHA256", "SunJCE");
            ref.init(spec);
            require(Arrays.equals(m.doFinal(data), ref.doFinal(data)), "HMAC differs from SunJCE");
        });
        check("securerandom-pkcs11", () -> {
            byte[] b = new byte[64];
            SecureRandom.getInstance("PKCS11", p).nextBytes(b);
            require(!Arrays.equals(b, new byte[64]), "all zero");
        });

        // ------------------------------------------------------------ concurrency
        check("threads-8-sign-loop", () -> {
            PrivateKey k = (PrivateKey) ks.getKey("java-ec", null);
            PublicKey pub = soft(ks.getCertificate("java-ec").getPublicKey());
            int threads = 8, iterations = Integer.getInteger("cks.iterations", 40);
            AtomicInteger ok = new AtomicInteger();
            ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
            ExecutorService ex = Executors.newFixedThreadPool(threads);
            CountDownLatch start = new CountDownLatch(1);
            List<Future<?>> fs = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                final int id = t;
                fs.add(ex.submit(() -> {
                    try {
                        start.await();
                        Signature s = Signature.getInstance("SHA256withECDSA", p);
                        Signature v = Signature.getInstance("SHA256withECDSA", "SunEC");
                        for (int i = 0; i < iterations; i++) {
                            byte[] data = (id + ":" + i + ":" + System.nanoTime()).getBytes();
                            s.initSign(k);
                            s.update(data);
                            byte[] sig = s.sign();
                            v.initVerify(pub);
                            v.update(data);
                            if (v.verify(sig)) ok.incrementAndGet();
                            else errors.add("thread " + id + " iteration " + i + ": bad signature");
                        }
                    } catch (Throwable e) {
                        errors.add("thread " + id + ": " + e);
                    }
                    return null;
                }));
            }
            start.countDown();
            for (Future<?> f : fs) f.get(240, TimeUnit.SECONDS);
            ex.shutdown();
            require(errors.isEmpty(), errors.size() + " errors, first: " + errors.peek());
            require(ok.get() == threads * iterations, ok.get() + " good signatures of " + threads * iterations);
        });
        check("threads-8-mixed-ops", () -> {
            PrivateKey k = (PrivateKey) ks.getKey("java-ec", null);
            SecretKey a = (SecretKey) ks.getKey("java-aes", null);
            int threads = 8;
            ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
            ExecutorService ex = Executors.newFixedThreadPool(threads);
            List<Future<?>> fs = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                final int id = t;
                fs.add(ex.submit(() -> {
                    try {
                        for (int i = 0; i < 20; i++) {
                            if ((id + i) % 2 == 0) {
                                Signature s = Signature.getInstance("SHA256withECDSA", p);
                                s.initSign(k);
                                s.update(new byte[] {(byte) i});
                                s.sign();
                            } else {
                                byte[] pt = random(100), iv = random(12);
                                Cipher c = Cipher.getInstance("AES/GCM/NoPadding", p);
                                c.init(Cipher.ENCRYPT_MODE, a, new GCMParameterSpec(128, iv));
                                byte[] ct = c.doFinal(pt);
                                c.init(Cipher.DECRYPT_MODE, a, new GCMParameterSpec(128, iv));
                                if (!Arrays.equals(c.doFinal(ct), pt)) errors.add("thread " + id + ": GCM mismatch");
                            }
                        }
                    } catch (Throwable e) {
                        errors.add("thread " + id + ": " + e);
                    }
                    return null;
                }));
            }
            for (Future<?> f : fs) f.get(240, TimeUnit.SECONDS);
            ex.shutdown();
            require(errors.isEmpty(), errors.size() + " errors, first: " + errors.peek());
        });

        summary();
    }

    static void summary() {
        System.out.println("INFO java: " + passed + " passed, " + failed + " failed");
        System.exit(failed == 0 ? 0 : 1);
    }
}
