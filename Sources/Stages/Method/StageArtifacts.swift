import Foundation
import Shared
import Tensor
import Vision

/// The stages' side of ``ArtifactFormat`` (Shared): names of a dataset
/// sample's files and the masks' PNG encoding.
extension ArtifactFormat {
    public static func mask(_ sample: LocoSample) -> String { mask(split: sample.split.rawValue, id: sample.id) }
    public static func map(_ sample: LocoSample) -> String { map(split: sample.split.rawValue, id: sample.id) }

    /// One palette PNG of class indices per image, named by ``mask(_:)``.
    public static func maskFiles(_ masks: [[Int32]], samples: [LocoSample], size: Int) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for (sample, mask) in zip(samples, masks) {
            files[Self.mask(sample)] = try PNG.encodeMask(Image(width: size, height: size, channels: 1, pixels: mask.map { UInt8(clamping: $0) }))
        }
        return files
    }

    public static func readMasks(_ files: [String: Data], samples: [LocoSample]) throws -> [[Int32]] {
        try samples.map { sample in
            let name = mask(sample)
            guard let data = files[name] else { throw StageError("no mask '\(name)' among the inputs", permanent: false) }
            return try PNG.decode(data, source: name, mode: .indices).pixels.map { Int32($0) }
        }
    }
}

/// Anomaly maps as 8-bit gray PNGs, all scaled by the largest value of the set.
public enum MapImages {
    public static func encode(_ maps: [[Float]], size: Int) throws -> (images: [Data], scale: Float) {
        let top = max(maps.map { $0.max() ?? 0 }.max() ?? 0, .leastNormalMagnitude)
        let images = try maps.map { map in
            try PNG.encode(Image(width: size, height: size, channels: 1, pixels: map.map { UInt8(clamping: Int(($0 / top * 255).rounded())) }))
        }
        return (images, top)
    }
}
