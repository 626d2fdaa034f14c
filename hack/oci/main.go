// imagebuild writes the service-ca release image without a container daemon: one layer with the
// static binary and a minimal distroless-style root filesystem, as an OCI image layout directory
// and the same layout as a single tar (an oci-archive that also carries Docker's manifest.json, as
// `docker save` writes since Docker 25, so `docker load`, `podman load`, `skopeo copy
// oci-archive:` and `crane push` all accept it). Everything is built with go-containerregistry
// (the library behind crane) and checked with its validator, the code behind `crane validate`.
//
// The output is reproducible: entries sorted, fixed owners and modes, every timestamp
// --epoch (SOURCE_DATE_EPOCH), gzip without a name or time, so the same binary gives the same
// digest.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// The unprivileged user of distroless images; the Deployment runs as non-root and the image says
// who that is, so `runAsNonRoot` is satisfied without a `runAsUser`.
const (
	nonrootID = 65532
	nonroot   = "65532:65532"
)

type labels map[string]string

func (l labels) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labels) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want key=value", v)
	}
	l[k] = val
	return nil
}

func main() {
	binary := flag.String("binary", "", "the static service-ca binary to ship")
	inImage := flag.String("path", "/usr/local/bin/service-ca", "where the binary goes in the image (the entrypoint)")
	ref := flag.String("ref", "", "image reference recorded in the layout (e.g. ghcr.io/service-ca/service-ca:0.1.0)")
	out := flag.String("out", "", "output directory: <out>/oci (layout) and <out>/<archive>")
	archive := flag.String("archive", "service-ca-oci.tar", "file name of the single-tar image in --out")
	epoch := flag.Int64("epoch", 0, "every timestamp in the image (seconds since 1970, SOURCE_DATE_EPOCH)")
	lbls := labels{}
	flag.Var(lbls, "label", "image label key=value (repeatable)")
	flag.Parse()
	if *binary == "" || *ref == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: imagebuild --binary FILE --ref REF --out DIR [--label k=v]...")
		os.Exit(2)
	}
	digest, err := run(*binary, *inImage, *ref, *out, *archive, time.Unix(*epoch, 0).UTC(), lbls)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

func run(binary, inImage, refText, out, archive string, created time.Time, lbls labels) (string, error) {
	ref, err := name.NewTag(refText, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("--ref %q: %w", refText, err)
	}
	layerTar, err := rootfs(binary, inImage, created)
	if err != nil {
		return "", err
	}
	img, err := image(layerTar, inImage, created, lbls)
	if err != nil {
		return "", err
	}
	if err := validate.Image(img); err != nil {
		return "", fmt.Errorf("the built image is invalid: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}

	// Written next to the final paths and renamed into place, so an interrupted run never leaves a
	// half-written image where the previous one was.
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	layoutDir := filepath.Join(out, "oci")
	tmpDir := layoutDir + ".tmp"
	_ = os.RemoveAll(tmpDir)
	if err := writeLayout(tmpDir, img, ref); err != nil {
		return "", err
	}
	tmpTar := filepath.Join(out, archive+".tmp")
	if err := tarDir(tmpDir, tmpTar, created); err != nil {
		return "", err
	}
	if err := readBack(tmpDir, tmpTar, digest); err != nil {
		return "", err
	}
	_ = os.RemoveAll(layoutDir)
	if err := os.Rename(tmpDir, layoutDir); err != nil {
		return "", err
	}
	if err := os.Rename(tmpTar, filepath.Join(out, archive)); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// entry is one file, directory or link of the image's root filesystem.
type entry struct {
	name     string
	mode     int64
	uid      int
	body     []byte
	dir      bool
	linkname string
}

// rootfs is the uncompressed tar of the single layer: what distroless/static has and the binary
// needs (a user database naming the non-root user, a sticky /tmp, nsswitch.conf for the libc
// resolver), and nothing else: no shell, no package manager, no CA store (the API server's CA
// comes from the ServiceAccount mount).
func rootfs(binary, inImage string, created time.Time) ([]byte, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	inImage = strings.TrimPrefix(path.Clean(inImage), "/")
	if inImage == "" || inImage == "." || strings.HasPrefix(inImage, "..") {
		return nil, fmt.Errorf("--path %q: want an absolute file path", inImage)
	}
	entries := []entry{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, body: []byte(
			"root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/group", mode: 0o644, body: []byte(
			"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")},
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "home", mode: 0o755, dir: true},
		{name: "home/nonroot", mode: 0o700, uid: nonrootID, dir: true},
		{name: "root", mode: 0o700, dir: true},
		{name: "tmp", mode: 0o1777, dir: true},
		{name: "var", mode: 0o755, dir: true},
		{name: "run", mode: 0o755, dir: true},
		// Where the kubelet mounts the ServiceAccount: /var/run/secrets/... as in distroless.
		{name: "var/run", linkname: "../run"},
		{name: inImage, mode: 0o755, body: bin},
	}
	for dir := path.Dir(inImage); dir != "."; dir = path.Dir(dir) {
		entries = append(entries, entry{name: dir, mode: 0o755, dir: true})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	for _, e := range entries {
		if seen[e.name] {
			continue
		}
		seen[e.name] = true
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.uid,
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case e.linkname != "":
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.linkname
			h.Mode = 0o777
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// image is the OCI image (OCI media types throughout) with one gzip layer and the config the
// Deployment relies on: the entrypoint (the Deployment passes only args) and the non-root user.
func image(layerTar []byte, entrypoint string, created time.Time, lbls labels) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.BestCompression),
		tarball.WithCompressedCaching,
	)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: plainLayer{layer},
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "hack/oci/imagebuild: static service-ca binary, /etc/passwd, /etc/group, /tmp",
			Comment:   "built without a container daemon (make image)",
		},
		MediaType: types.OCILayer,
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: created}
	cfg.Config.Entrypoint = []string{entrypoint}
	cfg.Config.Cmd = nil
	cfg.Config.User = nonroot
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	cfg.Config.Labels = lbls
	return mutate.ConfigFile(img, cfg)
}

// plainLayer hides the tarball layer's own descriptor, whose empty (not nil) annotations map
// makes the in-memory manifest differ from its serialization (which omits it) and fail
// validation; the descriptor is then computed from digest, size and media type alone.
type plainLayer struct{ v1.Layer }

// writeLayout writes the OCI image layout with the reference as annotations (the full name in
// org.opencontainers.image.ref.name, which podman and skopeo read, and io.containerd.image.name
// for containerd and Docker), plus Docker's manifest.json pointing into blobs/.
func writeLayout(dir string, img v1.Image, ref name.Tag) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.String(),
			"io.containerd.image.name":          ref.String(),
		}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
	)
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var layerPaths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		layerPaths = append(layerPaths, "blobs/sha256/"+d.Hex)
	}
	manifest := []map[string]any{{
		"Config":   "blobs/sha256/" + cfgName.Hex,
		"RepoTags": []string{ref.String()},
		"Layers":   layerPaths,
	}}
	body, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "manifest.json"), body, 0o644)
}

// tarDir writes dir as a tar with sorted entries, fixed owner, modes and times.
func tarDir(dir, file string, created time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, n := range names {
		full := filepath.Join(dir, filepath.FromSlash(n))
		info, err := os.Lstat(full)
		if err != nil {
			return errors.Join(err, f.Close())
		}
		h := &tar.Header{Name: n, Mode: 0o644, ModTime: created, Format: tar.FormatPAX}
		if info.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, n+"/", 0o755
		} else {
			h.Typeflag, h.Size = tar.TypeReg, info.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return errors.Join(err, f.Close())
		}
		if !info.IsDir() {
			body, err := os.ReadFile(full)
			if err != nil {
				return errors.Join(err, f.Close())
			}
			if _, err := tw.Write(body); err != nil {
				return errors.Join(err, f.Close())
			}
		}
	}
	if err := tw.Close(); err != nil {
		return errors.Join(err, f.Close())
	}
	return f.Close()
}

// readBack opens what was written the way the consumers do (the layout as an OCI layout, the tar
// through its Docker manifest.json) and validates both: same digest, every blob intact.
func readBack(dir, file string, want v1.Hash) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("reading the layout back: %w", err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != want {
		return fmt.Errorf("the layout's index.json does not name exactly the image %s: %+v", want, m.Manifests)
	}
	fromLayout, err := idx.Image(want)
	if err != nil {
		return err
	}
	if err := validate.Image(fromLayout); err != nil {
		return fmt.Errorf("the layout does not validate: %w", err)
	}
	fromTar, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return fmt.Errorf("reading %s as a Docker archive: %w", file, err)
	}
	if err := validate.Image(fromTar); err != nil {
		return fmt.Errorf("%s does not validate as a Docker archive: %w", file, err)
	}
	cfgFromTar, err := fromTar.ConfigName()
	if err != nil {
		return err
	}
	cfgFromLayout, err := fromLayout.ConfigName()
	if err != nil {
		return err
	}
	if cfgFromTar != cfgFromLayout {
		return fmt.Errorf("the archive's config %s is not the layout's %s", cfgFromTar, cfgFromLayout)
	}
	return nil
}
